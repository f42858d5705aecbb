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
//! datagrams are dropped, as a full network queue would drop them). With UDP segmentation
//! offload on, a destination's datagrams of equal size in one flush go as one send (a frame's
//! packets for each receiver of a composite), and a turn holds four system calls' worth
//! before it writes.
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
//! (bandwidth estimation on) fire on time. The fast ingress's own feedback (transport
//! feedback, NACKs, receiver reports) has a slack of its own per kind
//! ([`super::ingress`], "Cadence"): once due it goes with the leg's next packet or deadline,
//! and the leg's deadline is the latest it may wait.
//!
//! # Fast egress
//!
//! On a leg without bandwidth estimation (and with the engine's `fast_egress` on), forwarded
//! streams do not go through str0m's `write_rtp`: the driver writes the receiver's RTP header
//! (its SSRC, the [`Rewriter`]'s sequence number and timestamp, the MID and the kept
//! extensions — audio level, video orientation, playout delay — under the receiver's ids;
//! never transport-cc or abs-send-time) and the payload into the datagram, seals it with the
//! leg's own SRTP context ([`Leg::own_srtp`], index = the rewriter's extended sequence number)
//! and puts it in the outbox: no `write_rtp`, no release pass, no `poll_output` for it.
//! What keeps this correct next to str0m, which seals with the same keys:
//!
//! * **Nonces.** An (SSRC, index) is sealed once, on every leg (fast or not): each output
//!   stream has one numbering, the [`Rewriter`]'s, fed by its forwarded sources and the
//!   plugin's own packets alike; a packet of a source older than its first since the switch
//!   to it has no place in it and is dropped; every index is claimed before it is written,
//!   whoever seals it, and a packet whose index was used already or is too old to tell is not
//!   written ([`repair::SealedIndices`], counted in `FastEgress::refused`). The receiver's RTX
//!   SSRC of a fast stream is ours alone: nothing str0m writes on a fast leg is nackable (so
//!   its RTX cache stays empty and it never resends), and without bandwidth estimation str0m
//!   sends no padding. No SRTCP of ours is sent.
//! * **Sender reports.** str0m's SR for a stream takes its RTP time from the last packet
//!   written plus the time since, and says 0 for a stream it never wrote, which breaks the
//!   receiver's audio/video sync. So one packet per stream per [`STR0M_ANCHOR_INTERVAL`]
//!   (the first, and the first after a switch of source, included) still goes through
//!   `write_rtp` with its arrival time: the SR's (NTP, RTP) pair is then str0m's own
//!   computation, from a packet at most that old. Until str0m has sent that packet (on the
//!   leg's next input) the stream's next packets follow it through str0m, so that none
//!   overtakes it. Its packet and octet counts only count
//!   those packets.
//! * **Loss repair.** A sent packet of a video stream is kept ([`repair::SentCache`]); the
//!   peer's SRTCP is opened (a copy, with our own receive context) and its NACKs answered with
//!   RTX (or a retransmission of our own packet where RTX is not negotiated), within a budget
//!   per stream (about a sixth of its packets per second) and per RTCP packet
//!   ([`repair::MAX_REPAIRS_PER_RTCP`]), each request costing one cache slot. str0m still
//!   gets that SRTCP: PLI/FIR, receiver reports and its NACK count work as before. Fast
//!   packets carry no transport-cc or abs-send-time (anchors do): the receiver's estimate
//!   (REMB) rests on fewer samples than on a leg str0m sends everything on.
//! * **Keys.** Only with current keys: `own_srtp` follows the key slot's generation and is
//!   `None` before DTLS or for unusable keys; then (or before str0m has sent the leg anything,
//!   which tells where to send) packets go through str0m.

//!
//! # Fast ingress
//!
//! On a leg without bandwidth estimation (and with the engine's `fast_ingress` on), once DTLS
//! is up, inbound SRTP RTP does not reach str0m: `Driver::datagram` tells RTP from RTCP by
//! the second byte (RFC 5761, RFC 7983; STUN, DTLS and all SRTCP still go to str0m), opens the
//! packet with the leg's own receive context (`SrtpRx`: index estimate and replay window per
//! SSRC, moved only by authenticated packets), and hands it to `rtp_in`, the function str0m's
//! packets go through too, so forwarding, taps and the plugin's `rtp` callback see the same
//! plaintext. A repair on the leg's RTX payload type is un-RTX'd (its OSN, under the main
//! stream's SSRC) only when it fills a hole of that stream. The feedback str0m would have
//! sent about these packets is the driver's ([`super::ingress`], sans-IO): transport-wide
//! congestion control feedback (every packet of the leg counts, RTX, padding and probes
//! included, since its sequence numbers are transport-wide: a leg's RTP goes all one way),
//! NACKs for holes and receiver reports, sealed with our SRTCP on a sender SSRC of our own
//! (reserved on our `SrtpTx`, allocated by str0m as one no stream of the leg uses), sent
//! where the peer's last authenticated RTP came from (else where str0m sends the leg's
//! media). Key-frame requests stay str0m's: a stream it never saw RTP of is declared to it
//! (`expect_stream_rx`), so `request_keyframe` works. Padding-only packets of a main stream
//! keep their number and go on empty, as str0m handed them up. What the fast path cannot
//! place (unknown payload type or MID, a RID, an RTX packet repairing nothing) is dropped and
//! counted, never passed to str0m. A new stream takes the place of one idle for 10 s; with
//! every place live (or our SRTP context full) the leg goes to str0m, never a live stream
//! dropped. Per leg it is all or nothing,
//! decided when the leg connects: the first keys only (a second key generation hands the leg
//! to str0m for good), no simulcast,
//! one id per extension across the media sections; a renegotiation that brings simulcast or
//! moves an extension's id hands the leg back too. Its timers share the leg's deadline; a
//! deadline of the fast ingress alone does not give str0m a pass.
//!
//! Handing back: str0m never saw the leg's streams, so it would extend their sequence numbers
//! at rollover counter 0. Each main stream's counter goes to str0m (`StreamRx::reset_roc`)
//! with that stream's first packet our own context authenticates; until then the stream's
//! packets that do not authenticate are dropped, since str0m applies `reset_roc` to the next
//! packet before authenticating it, and a forgery or replay would spend it and leave the
//! stream at counter 0 for good (`Leg::roc_for_str0m`). On a rekey our context is the new
//! keys' by then: it is seeded from our stream state first. RTX streams cannot be handed over:
//! str0m 0.25's `reset_roc` covers the main register only and seeds the RTX window from its
//! own (private) session history, which never saw them; so after a hand-back, repairs on an
//! RTX SSRC whose sequence number has wrapped since the call began fail str0m's
//! authentication (dropped: that stream loses loss repair; its media is unaffected).
//!
//! Arrival times: the transport feedback reports when each packet arrived, and the sender's
//! estimator reads their spacing (a probe cluster received faster than it was sent is
//! refused). A batch read late holds packets that arrived milliseconds apart, so with the
//! fast ingress on the media socket has kernel receive timestamps (`SO_TIMESTAMPNS`,
//! [`super::udp`]): the feedback, the streams' jitter and the delay since the peer's last
//! SR count from the datagram's stamp, mapped to `Instant`. Everything else (str0m's clock,
//! the timers, the packet handed on) keeps the driver's clock, which never goes back.
//! Without a stamp the read time stands in (`Arrival::read`).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use huddle_sdk::HangupReason;
use str0m::bwe::BweKind;
use str0m::media::{
    ExtensionValues, Frequency, KeyframeRequestKind, MediaKind, MediaTime, Mid, Pt,
};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpPacket, RtpWrite, SeqNo, Ssrc, VideoOrientation};
use str0m::{Event, IceConnectionState, Input, Output, Reason, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::ingress::{
    read_extensions, Arrival, ExtensionIds, Extensions, Ingress, MAX_STREAMS, RTX_WINDOW,
};
use super::keytap::{KeySlot, LegKeys};
use super::repair::{self, Resend, SentCache};
use super::rtp::{self, EgressExtensions, EgressHeader, KeyframeGate, Rewriter, SeqExtender};
use super::srtp::{LegSrtp, SrtpError, SrtpRx, SrtpTx};
use super::udp::{Outbox, RecvBuffers};
use super::{Command, MediaEngine, MediaEvents};

/// The driver's maps, looked up several times per packet: keys are ids, addresses and small
/// values the driver controls or the peer's SSRCs, so a fast non-DoS-hardened hash is enough
/// (an attacker choosing SSRCs only slows its own leg's map).
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
type FastSet<K> = HashSet<K, foldhash::fast::RandomState>;

/// The [`Rewriter`] source key of a plugin's own packets (its SSRC in the low 32 bits): apart
/// from every forwarded source's SSRC.
const PLUGIN_SOURCE: u64 = 1 << 32;

/// Datagrams read per wake-up before deadlines and timers get their turn.
const READ_BATCH: usize = 256;
/// Commands applied per wake-up.
const COMMAND_BATCH: usize = 1024;
/// Receivers' key-frame requests passed to the sender of a forwarded stream at most this often
/// ([`KeyframeGate`]).
pub(crate) const FORWARDED_KEYFRAME_INTERVAL: Duration = Duration::from_millis(500);
/// On a fast-egress leg, one forwarded packet per stream at least this often still goes
/// through str0m's `write_rtp` (module docs, "Fast egress"): str0m's sender reports take their
/// RTP time from the last packet written, and would say 0 for a stream it never wrote.
pub(crate) const STR0M_ANCHOR_INTERVAL: Duration = Duration::from_secs(1);
/// After such a packet, the stream's next ones follow it through str0m until str0m has sent
/// it (it does so only on the leg's next input), so that none overtakes it on the wire; at
/// most this long, should str0m never send it.
const ANCHOR_RELEASE_WAIT: Duration = Duration::from_millis(100);
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
    /// Forwarded streams are sealed by the driver (module docs, "Fast egress"): bandwidth
    /// estimation off, and the engine's knob on.
    fast_egress: bool,
    /// Where str0m sent this leg's SRTP or SRTCP last (the ICE pair in use): where the fast
    /// egress sends.
    dest: Option<SocketAddr>,
    /// Some outgoing stream keeps sent packets for repair: the peer's SRTCP is read for NACKs.
    repairs: bool,
    /// Fast streams waiting for str0m to send their anchor packet (`FastStream::behind_anchor`).
    anchors: usize,
    /// The leg's media sections (for the peer's header-extension ids and simulcast).
    mids: Vec<Mid>,
    /// Inbound RTP may be opened by the driver (module docs, "Fast ingress"): bandwidth
    /// estimation off, and the engine's knob on.
    fast_ingress: bool,
    /// The fast ingress's state, from the leg's connection on; `None` when it does not (or no
    /// longer) take the leg's RTP.
    ingress: Option<Box<FastIngress>>,
    /// The fast ingress gave the leg up for good (a rekey, simulcast after a renegotiation):
    /// str0m takes its RTP.
    ingress_off: bool,
    /// Main SSRCs the fast ingress handed to str0m whose rollover counter str0m has not been
    /// given yet: it is, with the first of their packets our context authenticates
    /// ([`Leg::roc_for_str0m`]).
    roc_pending: Vec<u32>,
}

/// Which of a leg's receive streams a key-frame request is for.
#[derive(Debug, Clone, Copy)]
enum KeyframeOf {
    Mid(Mid),
    Ssrc(u32),
}

/// One leg's fast ingress: the sans-IO receive state and what places its packets.
struct FastIngress {
    core: Ingress,
    /// The key generation it opens with; another one ends it (module docs, "Fast ingress").
    generation: u32,
    /// The peer's header-extension ids.
    ids: ExtensionIds,
    /// Per media section, the main SSRC seen (what its RTX packets repair).
    mains: Vec<(Mid, u32)>,
    /// Where the peer's last authenticated RTP came from: where its feedback goes until str0m
    /// has sent the leg anything (a receive-only leg may not for a second).
    peer: Option<SocketAddr>,
    /// A new stream found every place taken by live ones: the leg goes to str0m.
    hand_back: bool,
    /// Each RTX SSRC's main SSRC, fixed at its first packet (the pairing signalled in the SDP,
    /// else the mid's main then): a repair in flight when the sender changes the mid's main
    /// stream must not land in the new one.
    rtx_mains: Vec<(u32, u32)>,
}

/// Why the fast ingress did not forward an opened packet (two counters of [`FastIngress`]:
/// what senders send anyway, and what it could not place).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dropped {
    /// RTX padding and probes, a repair of a packet we have, the original after its repair.
    Expected,
    /// An unknown payload type or MID, a RID, no room for a new stream, an RTX packet whose
    /// OSN is no hole we could have asked for, or whose stream is unknown.
    Unplaced,
}

/// One inbound RTP packet as `rtp_in` forwards or hands it to plugins: from str0m's
/// `RtpPacket` or opened by the fast ingress.
struct Inbound {
    ssrc: u32,
    pt: Pt,
    marker: bool,
    /// The extended sequence number (un-RTX'd for a repair).
    seq: u64,
    seq16: u16,
    timestamp: u32,
    csrc: [u32; 15],
    csrc_count: usize,
    ext: ExtensionValues,
    payload: Arc<[u8]>,
    arrival: Instant,
}

impl From<RtpPacket> for Inbound {
    fn from(p: RtpPacket) -> Inbound {
        Inbound {
            ssrc: *p.header.ssrc,
            pt: p.header.payload_type,
            marker: p.header.marker,
            seq: *p.seq_no,
            seq16: p.header.sequence_number,
            timestamp: p.header.timestamp,
            csrc: p.header.csrc,
            csrc_count: p.header.csrc_count.min(15),
            ext: p.header.ext_vals,
            payload: p.payload,
            arrival: p.timestamp,
        }
    }
}

/// A plugin tapping a stream: its index and where its events go.
type Tapper = (usize, Arc<dyn MediaEvents>);

#[derive(Default)]
struct TxState {
    plugin_seq: SeqExtender,
    /// The one numbering of the stream, whoever feeds it (forwarded sources and the plugin).
    rewriter: Rewriter,
    /// Main-stream indices written so far, by us or by str0m, on any leg: none is sealed
    /// twice (module docs, "Fast egress").
    sealed: repair::SealedIndices,
    /// The stream as the fast egress sends it, from its first forwarded packet on.
    fast: Option<Box<FastStream>>,
}

/// One outgoing stream of a fast-egress leg, as the driver sends it itself.
struct FastStream {
    ssrc: u32,
    /// The RTX SSRC, when the receiver negotiated RTX and it is ours to send on.
    rtx: Option<u32>,
    mid: Mid,
    exts: EgressExtensions,
    /// Sent packets kept for repair (video; audio is not NACKed).
    cache: Option<SentCache>,
    /// When a packet of this stream last went through str0m ([`STR0M_ANCHOR_INTERVAL`]).
    anchored: Option<Instant>,
    /// That packet is not on the wire yet: the stream's packets queue behind it in str0m.
    behind_anchor: bool,
    /// The send stream still exists (a renegotiation may remove it).
    live: bool,
}

impl FastStream {
    /// The stream `mid` of `rtc` as the receiver negotiated it; `None` when it has no send
    /// stream.
    fn new(rtc: &mut Rtc, mid: Mid, video: bool) -> Option<FastStream> {
        let exts = rtc.media(mid).map_or_else(EgressExtensions::default, |m| {
            let map = m.remote_extmap();
            EgressExtensions {
                mid: map.id_of(str0m::rtp::Extension::RtpMid),
                audio_level: map.id_of(str0m::rtp::Extension::AudioLevel),
                video_orientation: map.id_of(str0m::rtp::Extension::VideoOrientation),
                playout_delay: map.id_of(str0m::rtp::Extension::PlayoutDelay),
            }
        });
        let mut api = rtc.direct_api();
        let tx = api.stream_tx_by_mid(mid, None)?;
        Some(FastStream {
            ssrc: *tx.ssrc(),
            rtx: tx.rtx().map(|s| *s),
            mid,
            exts,
            cache: video.then(|| SentCache::new(repair::CACHE_PACKETS, repair::CACHE_AGE)),
            anchored: None,
            behind_anchor: false,
            live: true,
        })
    }
}

/// How one forwarded packet leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// Sealed by the driver, sent to this address.
    Fast(SocketAddr),
    /// Through str0m's `write_rtp`; `anchor`: on a fast leg, to keep its sender reports true.
    Str0m { anchor: bool },
    /// Not at all: its index was sealed already (module docs, "Fast egress").
    Skip,
}

/// One forwarded packet for one receiver, rewritten.
struct Outgoing<'a> {
    pt: u8,
    /// The receiver's RTX payload type for `pt`, if negotiated.
    rtx_pt: Option<u8>,
    marker: bool,
    seq: u64,
    ts: u32,
    ext: &'a ExtensionValues,
}

/// A leg's SRTP contexts of our own, next to str0m's: the same keys, for the forwarding fast
/// path (bench/NOTES.md, "Media: a forwarding fast path outside str0m"). Built once per key
/// generation: `tx` seals the fast egress's packets, `rx` opens the peer's SRTCP for its NACKs
/// (and, in debug builds, checks each inbound packet, [`verify_inbound_rtp`]).
#[derive(Debug)]
pub(crate) struct OwnSrtp {
    /// The key slot's generation these were built from.
    generation: u32,
    profile: super::srtp::SrtpProfile,
    /// Seals what the fast egress sends outside str0m.
    tx: SrtpTx,
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
            fast_egress: false,
            dest: None,
            repairs: false,
            anchors: 0,
            mids: Vec::new(),
            fast_ingress: false,
            ingress: None,
            ingress_off: false,
            roc_pending: Vec::new(),
        }
    }

    /// The leg's media sections, as answered.
    pub(crate) fn with_mids(mut self, mids: Vec<Mid>) -> Leg {
        self.mids = mids;
        self
    }

    /// Opens inbound RTP outside str0m once connected (module docs, "Fast ingress"); only
    /// for a leg without bandwidth estimation.
    pub(crate) fn with_fast_ingress(mut self) -> Leg {
        self.fast_ingress = true;
        self
    }

    /// Starts the fast ingress if the leg may have it: the first keys (a rekey hands the leg to
    /// str0m for good), a profile we implement, no simulcast, and a sender SSRC of our own for
    /// its feedback, reserved on our SRTP context (never one str0m sends on). Called once
    /// connected, before any RTP was opened: every inbound RTP packet of the leg goes one way
    /// (the transport-wide sequence numbers need one register). Whether it started.
    fn start_ingress(&mut self, now: Instant) -> bool {
        if !self.fast_ingress || self.ingress_off || self.ingress.is_some() {
            return self.ingress.is_some();
        }
        // Decided once: whatever the outcome, RTP already went (or goes) one way.
        self.ingress_off = true;
        let generation = self.keys.generation();
        if generation != 1 {
            return false;
        }
        let simulcast = self.mids.iter().any(|m| {
            self.rtc
                .media(*m)
                .is_some_and(|m| matches!(m.rids_rx(), str0m::media::Rids::Specific(_)))
        });
        if simulcast {
            return false;
        }
        let Some(ids) = self.extension_ids() else {
            return false;
        };
        let own = *self.rtc.direct_api().new_ssrc();
        let Some(srtp) = self.own_srtp() else {
            return false;
        };
        if srtp.tx.reserve_own_rtcp_ssrc(own).is_err() {
            return false;
        }
        self.ingress = Some(Box::new(FastIngress {
            core: Ingress::new(own, now),
            generation,
            ids,
            mains: Vec::new(),
            peer: None,
            hand_back: false,
            rtx_mains: Vec::new(),
        }));
        self.ingress_off = false;
        true
    }

    /// The peer's header-extension ids over every media section (BUNDLE: one id means one
    /// extension in all of them, and str0m reads them per session); `None` when a section
    /// gives an extension another id than another section does.
    fn extension_ids(&self) -> Option<ExtensionIds> {
        use str0m::rtp::Extension as E;
        let mut found: Option<ExtensionIds> = None;
        for mid in &self.mids {
            let Some(media) = self.rtc.media(*mid) else {
                continue;
            };
            let map = media.remote_extmap();
            let ids = ExtensionIds {
                mid: map.id_of(E::RtpMid),
                transport_cc: map.id_of(E::TransportSequenceNumber),
                rid: map.id_of(E::RtpStreamId),
                repaired_rid: map.id_of(E::RepairedRtpStreamId),
                audio_level: map.id_of(E::AudioLevel),
                video_orientation: map.id_of(E::VideoOrientation),
                playout_delay: map.id_of(E::PlayoutDelay),
            };
            let Some(f) = found.as_mut() else {
                found = Some(ids);
                continue;
            };
            // A section may lack an extension another has (audio has no video orientation):
            // merged; one extension under two ids is not.
            for (have, new) in [
                (&mut f.mid, ids.mid),
                (&mut f.transport_cc, ids.transport_cc),
                (&mut f.rid, ids.rid),
                (&mut f.repaired_rid, ids.repaired_rid),
                (&mut f.audio_level, ids.audio_level),
                (&mut f.video_orientation, ids.video_orientation),
                (&mut f.playout_delay, ids.playout_delay),
            ] {
                match (*have, new) {
                    (Some(a), Some(b)) if a != b => return None,
                    (None, b) => *have = b,
                    _ => {}
                }
            }
        }
        found
    }

    /// Whether str0m now sends on our feedback's SSRC (a stream it allocated after ours, which
    /// its allocator could not know of): our SRTCP must stop at once (one key, two index
    /// counters on one SSRC).
    fn own_ssrc_taken(&mut self) -> bool {
        let Some(own) = self.ingress.as_ref().map(|i| i.core.own_ssrc) else {
            return false;
        };
        let own = Ssrc::from(own);
        let mut api = self.rtc.direct_api();
        api.stream_tx(&own).is_some()
            || self.mids.iter().any(|m| {
                api.stream_tx_by_mid(*m, None)
                    .is_some_and(|tx| tx.rtx() == Some(own))
            })
    }

    /// Asks the peer for a key frame on the stream `of` (str0m sends the PLI or FIR at its
    /// next pass).
    ///
    /// str0m counts the PLIs it sends in its ingress stats, which it reports only for streams
    /// it received RTP on: never, on a fast-ingress leg. There each PLI is counted here (one
    /// per request: str0m sends one per pass however many requests came before it), and
    /// noted as seen, so that str0m's cumulative count, if it reports one later (the leg
    /// handed back), adds only what came after.
    fn request_keyframe(
        &mut self,
        of: KeyframeOf,
        kind: KeyframeRequestKind,
        counters: &super::MediaCounters,
    ) {
        let fast = self.ingress.is_some();
        let mut api = self.rtc.direct_api();
        let rx = match of {
            KeyframeOf::Mid(mid) => api.stream_rx_by_mid(mid, None),
            KeyframeOf::Ssrc(ssrc) => api.stream_rx(&Ssrc::from(ssrc)),
        };
        let Some(rx) = rx else {
            return;
        };
        rx.request_keyframe(kind);
        if fast && kind == KeyframeRequestKind::Pli {
            let key = (rx.mid(), rx.rid(), false);
            self.rtcp_seen.entry(key).or_default().1 += 1;
            counters.rtcp(false, 0, 1);
        }
    }

    /// Hands the leg's RTP back to str0m for good (a rekey, simulcast). str0m never saw these
    /// streams, so it would extend their sequence numbers at rollover counter 0: each main
    /// stream's counter is handed over too, with the stream's first packet our context
    /// authenticates ([`Leg::roc_for_str0m`]). On a rekey our context may already be the new
    /// keys' (empty) one: it is seeded from our stream state first.
    fn stop_ingress(&mut self) {
        self.ingress_off = true;
        let Some(ingress) = self.ingress.take() else {
            return;
        };
        let mains: Vec<(u32, u64)> = ingress
            .core
            .highest_indices()
            .filter(|s| !s.1)
            .map(|s| (s.0, s.2))
            .collect();
        if let Some(srtp) = self.own_srtp() {
            for &(ssrc, highest) in &mains {
                if srtp.rx.rtp_highest_index(ssrc).is_none() {
                    let _ = srtp.rx.seed_rtp_index(ssrc, highest);
                }
            }
        }
        self.roc_pending = mains.into_iter().map(|m| m.0).collect();
    }

    /// An inbound RTP datagram of a leg the fast ingress handed to str0m, before str0m gets it.
    /// For a stream whose rollover counter str0m still needs, our context opens a copy: if it
    /// authenticates, str0m is given that packet's counter (`reset_roc`, which str0m applies to
    /// the next packet of the stream, before authenticating it: so only one we know is genuine
    /// may follow), else the datagram is dropped (a forgery or replay would waste the one
    /// `reset_roc` and leave str0m at counter 0 for good). The first field: str0m gets the
    /// datagram; the second: our context opened it (debug builds check it no further).
    fn roc_for_str0m(&mut self, bytes: &[u8]) -> (bool, bool) {
        let Some(ssrc) = bytes
            .get(8..12)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        else {
            return (true, false);
        };
        let Some(at) = self.roc_pending.iter().position(|s| *s == ssrc) else {
            return (true, false);
        };
        let Some(srtp) = self.own_srtp() else {
            // No usable keys of ours: nothing to tell str0m with.
            self.roc_pending.swap_remove(at);
            return (true, false);
        };
        let mut copy = bytes.to_vec();
        let Ok(opened) = srtp.rx.unprotect_rtp(&mut copy) else {
            return (false, false);
        };
        self.roc_pending.swap_remove(at);
        if let Some(rx) = self.rtc.direct_api().stream_rx(&Ssrc::from(ssrc)) {
            rx.reset_roc(opened.index >> 16);
        }
        (true, true)
    }

    /// Sends forwarded streams outside str0m (module docs, "Fast egress"); only for a leg
    /// without bandwidth estimation (str0m's pacer and probes would send on the RTX SSRCs).
    pub(crate) fn with_fast_egress(mut self) -> Leg {
        self.fast_egress = true;
        self
    }

    /// How the next packet of `mid` (index `seq`) leaves, on any leg. Not at all when its
    /// index was written before (by either sealer). Fast only with current keys and a known
    /// destination; even then one packet per [`STR0M_ANCHOR_INTERVAL`] (and the first) goes
    /// through str0m.
    fn route(&mut self, mid: Mid, seq: u64, video: bool, now: Instant) -> Route {
        // Claimed before anything else: whichever way it leaves, the index is used.
        if !self.tx.entry(mid).or_default().sealed.claim(seq) {
            return Route::Skip;
        }
        if !self.fast_egress {
            return Route::Str0m { anchor: false };
        }
        let Some(to) = self.dest else {
            return Route::Str0m { anchor: false };
        };
        if self.own_srtp().is_none() {
            return Route::Str0m { anchor: false };
        }
        let Leg {
            rtc,
            tx,
            repairs,
            anchors,
            ..
        } = self;
        let state = tx.entry(mid).or_default();
        if state.fast.is_none() {
            state.fast = FastStream::new(rtc, mid, video).map(Box::new);
            *repairs |= state.fast.as_ref().is_some_and(|f| f.cache.is_some());
        }
        let Some(fast) = state.fast.as_mut() else {
            return Route::Str0m { anchor: false };
        };
        if !fast.live {
            // No anchor to wait for on a stream gone (else `anchors` would stay up).
            if std::mem::take(&mut fast.behind_anchor) {
                *anchors = anchors.saturating_sub(1);
            }
            return Route::Str0m { anchor: false };
        }
        let since = fast.anchored.map(|at| now.saturating_duration_since(at));
        if fast.behind_anchor {
            if since.is_some_and(|d| d < ANCHOR_RELEASE_WAIT) {
                return Route::Str0m { anchor: true };
            }
            fast.behind_anchor = false;
            *anchors = anchors.saturating_sub(1);
        }
        match since {
            Some(d) if d < STR0M_ANCHOR_INTERVAL => Route::Fast(to),
            _ => {
                fast.anchored = Some(now);
                fast.behind_anchor = true;
                *anchors += 1;
                Route::Str0m { anchor: true }
            }
        }
    }

    /// str0m sent `datagram` for this leg: an anchor packet ([`STR0M_ANCHOR_INTERVAL`]) that
    /// went out lets its stream's next packets go fast again.
    fn released(&mut self, datagram: &[u8]) {
        let Some(ssrc) = datagram.get(8..12) else {
            return;
        };
        let ssrc = u32::from_be_bytes([ssrc[0], ssrc[1], ssrc[2], ssrc[3]]);
        for state in self.tx.values_mut() {
            if let Some(fast) = state.fast.as_deref_mut() {
                if fast.behind_anchor && fast.ssrc == ssrc {
                    fast.behind_anchor = false;
                    self.anchors = self.anchors.saturating_sub(1);
                }
            }
        }
    }

    /// After a renegotiation: each fast stream takes the SSRCs and extension ids now
    /// negotiated, keeping its RTX sequence and cache (an index once used stays used).
    fn refresh_fast_streams(&mut self) {
        let Leg {
            rtc, tx, anchors, ..
        } = self;
        for (mid, state) in tx.iter_mut() {
            let Some(fast) = state.fast.as_deref_mut() else {
                continue;
            };
            match FastStream::new(rtc, *mid, fast.cache.is_some()) {
                Some(new) => {
                    fast.ssrc = new.ssrc;
                    fast.rtx = new.rtx;
                    fast.exts = new.exts;
                    fast.live = true;
                }
                // The stream is gone: nothing more is sent fast on it (str0m finds no send
                // stream for what comes and drops it).
                None => {
                    fast.live = false;
                    if std::mem::take(&mut fast.behind_anchor) {
                        *anchors = anchors.saturating_sub(1);
                    }
                }
            }
        }
    }

    /// Builds and seals one forwarded packet of `mid` for this leg's peer (the stream's
    /// [`FastStream`] exists: [`Leg::route`] said `Fast`). Keeps it for repair when the stream
    /// caches, taking `payload` there. `None` when sealing failed (nothing to send).
    fn seal_forwarded(
        &mut self,
        mid: Mid,
        p: &Outgoing<'_>,
        payload: Arc<[u8]>,
        now: Instant,
    ) -> Option<Vec<u8>> {
        let srtp = self.srtp.as_ref()?;
        let fast = self.tx.get_mut(&mid)?.fast.as_deref_mut()?;
        let overhead = srtp.profile.rtp_overhead();
        let mut buf = Vec::with_capacity(repair::MAX_HEADER + payload.len() + overhead);
        let header_len = write_header(&mut buf, fast, p);
        buf.extend_from_slice(&payload);
        srtp.tx.protect_rtp_vec(&mut buf, p.seq).ok()?;
        if let Some(cache) = fast.cache.as_mut() {
            // SRTP leaves the header in the clear: it is still the plaintext one.
            cache.insert(now, p.seq, &buf[..header_len], payload, p.rtx_pt, true);
        }
        Some(buf)
    }

    /// A forwarded packet of `mid` that str0m writes on a fast leg: kept for repair by RTX
    /// (never retransmitted as it was: str0m sealed it).
    fn cache_str0m_write(&mut self, mid: Mid, p: &Outgoing<'_>, payload: &Arc<[u8]>, now: Instant) {
        let Some(fast) = self.tx.get_mut(&mid).and_then(|s| s.fast.as_deref_mut()) else {
            return;
        };
        if fast.cache.is_none() || p.rtx_pt.is_none() || fast.rtx.is_none() {
            return;
        }
        let mut header = Vec::with_capacity(repair::MAX_HEADER);
        write_header(&mut header, fast, p);
        if let Some(cache) = fast.cache.as_mut() {
            cache.insert(now, p.seq, &header, payload.clone(), p.rtx_pt, false);
        }
    }

    /// Answers the NACKs in the peer's RTCP (`plain`, opened) for streams the fast egress
    /// sends: each repair sealed into `out`.
    fn answer_nacks(&mut self, plain: &[u8], now: Instant, out: &mut Vec<Vec<u8>>) {
        // Bounded, deduplicated (review of the fast egress, #3): each request then costs one
        // slot of one cache.
        let asked = repair::nack_requests(plain);
        if asked.is_empty() || self.own_srtp().is_none() {
            return;
        }
        let Leg { srtp, tx, .. } = self;
        let Some(srtp) = srtp.as_ref() else {
            return;
        };
        let overhead = srtp.profile.rtp_overhead();
        let mut repairs = 0;
        for (ssrc, seq) in asked {
            if repairs == repair::MAX_REPAIRS_PER_RTCP {
                break;
            }
            let Some(fast) = tx
                .values_mut()
                .filter_map(|s| s.fast.as_deref_mut())
                .find(|f| f.ssrc == ssrc)
            else {
                continue;
            };
            let rtx = fast.rtx;
            let Some(cache) = fast.cache.as_mut() else {
                continue;
            };
            let Some(seq) = cache.extend(seq) else {
                continue;
            };
            let Some((how, sent)) = cache.resend(now, seq, rtx.is_some()) else {
                continue;
            };
            let mut buf =
                Vec::with_capacity(sent.header().len() + sent.payload().len() + 2 + overhead);
            let index = match (how, rtx) {
                (Resend::Rtx { rtx_seq }, Some(rtx_ssrc)) => {
                    // The low 16 bits of the RTX index are its sequence number.
                    if repair::write_rtx(sent, rtx_ssrc, rtx_seq as u16, &mut buf).is_none() {
                        continue;
                    }
                    rtx_seq
                }
                (Resend::Again { seq }, _) => {
                    repair::write_again(sent, &mut buf);
                    seq
                }
                (Resend::Rtx { .. }, None) => continue,
            };
            if srtp.tx.protect_rtp_vec(&mut buf, index).is_ok() {
                repairs += 1;
                out.push(buf);
            }
        }
    }

    /// Places an opened inbound packet (`plain`, its SRTP index `index`) of a fast-ingress leg:
    /// records its transport-wide sequence number, finds its stream (by SSRC, else by MID, and
    /// tells str0m of a new one so that key-frame requests for it work), and un-RTX's a repair.
    /// `None` for what is not forwarded: padding, probes, simulcast, an unknown stream or
    /// payload type, a repair of nothing missing. The flag: it was a repair.
    ///
    /// `arrival` (the kernel's stamp when there is one) is what the feedback reports and the
    /// stream state counts from; `now`, the driver's clock, is what goes on with the packet.
    fn place_inbound(
        &mut self,
        plain: &[u8],
        index: u64,
        arrival: Arrival,
        now: Instant,
    ) -> Result<(Inbound, bool), Dropped> {
        let Leg {
            rtc,
            ingress,
            rx_mids,
            mids,
            ..
        } = self;
        let ingress = ingress.as_deref_mut().ok_or(Dropped::Unplaced)?;
        let p = rtp::parse(plain).ok_or(Dropped::Unplaced)?;
        let ext = read_extensions(plain, &ingress.ids);
        // Every packet counts for the transport feedback (padding and probes too).
        if let Some(seq) = ext.transport_cc {
            ingress.core.twcc.record(seq, arrival);
        }
        // Padding-only packets go on: on a main SSRC they hold a sequence number (not a hole:
        // no NACK, no loss, and the forwarded output stays contiguous, as str0m handed them
        // up); on an RTX SSRC they carry no OSN and end below.
        if ext.rid {
            return Err(Dropped::Unplaced);
        }
        let params = rtc.codec_config().params();
        let pt = Pt::from(p.pt);
        let (main_pt, rtx) = match params.iter().find(|c| c.resend() == Some(pt)) {
            Some(main) => (main.pt(), true),
            None => (
                params
                    .iter()
                    .find(|c| c.pt() == pt)
                    .ok_or(Dropped::Unplaced)?
                    .pt(),
                false,
            ),
        };
        let main_params = params
            .iter()
            .find(|c| c.pt() == main_pt)
            .ok_or(Dropped::Unplaced)?;
        let rtx_negotiated = main_params.resend().is_some();
        let clock = main_params.spec().clock_rate.get();
        let mid = match rx_mids.get(&p.ssrc) {
            Some(mid) => *mid,
            None => {
                let mut api = rtc.direct_api();
                let ssrc = Ssrc::from(p.ssrc);
                let known = match api.stream_rx(&ssrc) {
                    Some(s) => Some(s.mid()),
                    // An RTX SSRC signalled with its main one (a=ssrc-group:FID).
                    None if rtx => mids.iter().copied().find(|m| {
                        api.stream_rx_by_mid(*m, None)
                            .is_some_and(|s| s.rtx() == Some(ssrc))
                    }),
                    None => None,
                };
                let mid = known
                    .or_else(|| ext.mid_str().map(Mid::from))
                    .ok_or(Dropped::Unplaced)?;
                rtc.media(mid).ok_or(Dropped::Unplaced)?;
                mid
            }
        };
        let video = rtc.media(mid).is_some_and(|m| m.kind() == MediaKind::Video);
        // State first (bounded), the SSRC's mid only with it: a flood of new SSRCs ends here.
        // A stream idle long enough gives its place; with every place live the leg goes to
        // str0m (never a live stream dropped, nor a new one).
        if ingress.core.find(p.ssrc).is_none() {
            if let Some(gone) = ingress.core.make_room(arrival.at) {
                rx_mids.remove(&gone);
                ingress.mains.retain(|(_, s)| *s != gone);
                ingress.rtx_mains.retain(|(r, m)| *r != gone && *m != gone);
            }
        }
        let Some(stream) = ingress
            .core
            .stream(p.ssrc, rtx, video && !rtx, clock, arrival.at)
        else {
            ingress.hand_back = true;
            return Err(Dropped::Unplaced);
        };
        stream.set_rtx_repair(rtx_negotiated);
        let before = stream.highest();
        let filled = stream.received(index, p.timestamp, arrival.at);
        // Below the newest and no hole: delivered already (the original after its repair).
        if !rtx && stream.nacks() && before.is_some_and(|h| index < h) && !filled {
            return Err(Dropped::Expected);
        }
        if let std::collections::hash_map::Entry::Vacant(e) = rx_mids.entry(p.ssrc) {
            e.insert(mid);
            if !rtx {
                let mut api = rtc.direct_api();
                if api.stream_rx(&Ssrc::from(p.ssrc)).is_none() {
                    api.expect_stream_rx(Ssrc::from(p.ssrc), None, mid, None);
                }
            }
        }
        let (ssrc, seq, payload, repaired) = if rtx {
            // RFC 4588: the original sequence number, then the original payload.
            let (osn, payload) = match p.payload {
                [a, b, rest @ ..] if !rest.is_empty() => (u16::from_be_bytes([*a, *b]), rest),
                _ => return Err(Dropped::Expected),
            };
            let main = match ingress.rtx_mains.iter().find(|(r, _)| *r == p.ssrc) {
                Some((_, main)) => *main,
                None => {
                    let signalled = rtc
                        .direct_api()
                        .stream_rx_by_mid(mid, None)
                        .filter(|s| s.rtx() == Some(Ssrc::from(p.ssrc)))
                        .map(|s| *s.ssrc());
                    let current = ingress.mains.iter().find(|(m, _)| *m == mid).map(|m| m.1);
                    let main = signalled.or(current).ok_or(Dropped::Unplaced)?;
                    // Bounded as the streams are (an RTX SSRC has a stream of its own).
                    if ingress.rtx_mains.len() < MAX_STREAMS {
                        ingress.rtx_mains.push((p.ssrc, main));
                    }
                    main
                }
            };
            let stream = ingress.core.find(main).ok_or(Dropped::Unplaced)?;
            let highest = stream.highest().ok_or(Dropped::Unplaced)?;
            let seq = extend_near(highest, osn);
            // An OSN ahead of the stream or far behind it repairs nothing we could have asked
            // for; one of a packet we have is a sender's probe (RTX payload padding).
            if seq > highest || highest - seq >= RTX_WINDOW {
                return Err(Dropped::Unplaced);
            }
            if !stream.fill(seq) {
                return Err(Dropped::Expected);
            }
            (main, seq, payload, true)
        } else {
            match ingress.mains.iter_mut().find(|(m, _)| *m == mid) {
                Some(entry) => entry.1 = p.ssrc,
                None => ingress.mains.push((mid, p.ssrc)),
            }
            (p.ssrc, index, p.payload, false)
        };
        let csrc_count = usize::from(plain[0] & 0x0f);
        let mut csrc = [0u32; 15];
        for (i, c) in csrc.iter_mut().enumerate().take(csrc_count) {
            let at = 12 + 4 * i;
            *c = u32::from_be_bytes([plain[at], plain[at + 1], plain[at + 2], plain[at + 3]]);
        }
        Ok((
            Inbound {
                ssrc,
                pt: main_pt,
                marker: p.marker,
                seq,
                seq16: seq as u16,
                timestamp: p.timestamp,
                csrc,
                csrc_count,
                ext: extension_values(&ext),
                payload: Arc::from(payload),
                arrival: now,
            },
            repaired,
        ))
    }

    /// After a renegotiation: the fast ingress goes on only where it still may (no simulcast,
    /// the same extension ids); else str0m takes the leg's RTP from here on.
    fn refresh_ingress(&mut self) {
        if self.ingress.is_none() {
            return;
        }
        let simulcast = self.mids.iter().any(|m| {
            self.rtc
                .media(*m)
                .is_some_and(|m| matches!(m.rids_rx(), str0m::media::Rids::Specific(_)))
        });
        let ids = self.extension_ids();
        if self.own_ssrc_taken() {
            self.stop_ingress();
            return;
        }
        match (simulcast, ids, self.ingress.as_deref_mut()) {
            (false, Some(ids), Some(ingress)) => ingress.ids = ids,
            _ => self.stop_ingress(),
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
        let mut next = self.str0m_deadline().map_or(guard, |t| t.min(guard));
        // The fast ingress's feedback wakes the driver only when it can wait no longer: until
        // then it goes with the leg's packets (`Driver::fast_rtp_in`) or another deadline of
        // the leg (`super::ingress`, "Cadence").
        if let Some(due) = self.ingress.as_ref().and_then(|i| i.core.due()) {
            next = next.min(due.by);
        }
        Some(next)
    }

    /// When str0m wants its next pass (with the slack of periodic reports).
    fn str0m_deadline(&self) -> Option<Instant> {
        match self.timeout {
            Some(t) if self.lenient => Some(t + self.timer_slack),
            t => t,
        }
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
    /// Debug builds: packets the fast egress sealed, for its loss hook.
    #[cfg(debug_assertions)]
    sealed: u64,
}

/// Runs the engine until `Shutdown`, or until `stop_rx` closes (the engine's owner dropped its
/// [`super::EngineTask`]: the command channel never closes, since the driver holds a handle).
pub(crate) async fn run(
    socket: UdpSocket,
    candidate: SocketAddr,
    mut commands: mpsc::Receiver<Command>,
    mut stop_rx: tokio::sync::oneshot::Receiver<()>,
    engine: MediaEngine,
    stamped: bool,
    gso: bool,
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
        outbox: Outbox::new(gso),
        #[cfg(debug_assertions)]
        sealed: 0,
    };
    let mut buf = RecvBuffers::new(stamped);
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
            // Ready only once, when the owner is gone: the run ends then. What was queued
            // before still applies (a leg inserted then is hung up below with the rest);
            // nothing can be queued after the close, so the drain is bounded by the queue.
            _ = &mut stop_rx => {
                commands.close();
                while let Ok(c) = commands.try_recv() {
                    if d.apply(c) {
                        break;
                    }
                }
                stop = true;
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
                let (bytes, source, arrival) = buf.datagram(i);
                self.engine.counters().received(bytes.len());
                if let Some(source) = source {
                    self.datagram(bytes, source, arrival);
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
        if self.outbox.full() && !self.outbox.blocked() {
            self.flush();
        }
    }

    /// Writes out what the legs transmitted, as far as the socket takes it.
    fn flush(&mut self) {
        let counters = self.engine.counters();
        self.outbox.flush(&self.socket, |n| counters.sent(n));
        let gso = self.outbox.take_gso_counts();
        if gso != super::udp::GsoCounts::default() {
            counters.gso(gso);
        }
    }

    /// Routes one datagram to its leg (see the module docs of `media`). `stamp`: when it
    /// arrived by the kernel's receive timestamp, if the socket gave one.
    fn datagram(&mut self, bytes: &[u8], source: SocketAddr, stamp: Option<Instant>) {
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
        // The fast ingress's feedback tells the sender when its packets arrived; str0m's clock
        // (and everything else) is the driver's, which must not go back.
        let arrival = stamp.map_or(Arrival::read(now), Arrival::stamped);
        leg.last_rx = now;
        let kind = srtp_kind(bytes);
        if leg.ingress.is_some() {
            let current = leg.keys.generation();
            if leg
                .ingress
                .as_ref()
                .is_some_and(|i| i.generation != current)
            {
                // New keys: str0m takes the leg's RTP from here on (module docs).
                leg.stop_ingress();
            } else if kind == Some(false) && self.fast_rtp_in(id, bytes, source, arrival, now) {
                return;
            }
        }
        // Handed back just now, or never fast: str0m's.
        let Some(leg) = self.legs.get_mut(&id) else {
            return;
        };
        let (give, opened) = match kind {
            Some(false) if !leg.roc_pending.is_empty() => leg.roc_for_str0m(bytes),
            _ => (true, false),
        };
        if !give {
            return;
        }
        // Debug builds open every str0m-bound RTP packet with our context too: not twice.
        #[cfg(debug_assertions)]
        let verify = !opened;
        #[cfg(not(debug_assertions))]
        let _ = opened;
        leg.clock = now;
        let Ok(receive) = Receive::new(Protocol::Udp, source, self.candidate, bytes) else {
            return;
        };
        let mut repairs = Vec::new();
        match kind {
            Some(true) if cfg!(debug_assertions) || leg.repairs || leg.ingress.is_some() => {
                if let Some(plain) = open_inbound_rtcp(leg, bytes, self.engine.counters()) {
                    if leg.repairs {
                        leg.answer_nacks(&plain, now, &mut repairs);
                    }
                    if let Some(ingress) = leg.ingress.as_deref_mut() {
                        note_sender_reports(&mut ingress.core, &plain, arrival.at);
                    }
                }
            }
            #[cfg(debug_assertions)]
            Some(false) if verify => verify_inbound_rtp(leg, bytes, self.engine.counters()),
            _ => {}
        }
        if let Err(e) = leg.rtc.handle_input(Input::Receive(now, receive)) {
            tracing::debug!(session = id, error = %e, "media input refused");
        }
        leg.unreleased = false;
        if let (false, Some(to)) = (repairs.is_empty(), leg.dest) {
            for datagram in repairs {
                self.engine.counters().fast(2);
                self.transmit(to, datagram);
            }
        }
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
            // The fast ingress's feedback timers share the leg's deadline: str0m gets its
            // pass only when its own timeout is due (or the leg waits for one).
            let str0m_due = leg.unreleased || leg.str0m_deadline().is_none_or(|t| t <= now);
            if leg.ingress.is_some() {
                self.ingress_feedback(id, now);
            }
            if !str0m_due {
                self.reschedule(id);
                // Nothing left due: on to the next leg (else str0m's pass below, so that no
                // deadline can stay in the past).
                if self
                    .legs
                    .get(&id)
                    .is_none_or(|l| l.deadline.is_some_and(|d| d > now))
                {
                    continue;
                }
            }
            let Some(leg) = self.legs.get_mut(&id) else {
                continue;
            };
            leg.clock = now;
            if let Err(e) = leg.rtc.handle_input(Input::Timeout(now)) {
                tracing::debug!(session = id, error = %e, "media timeout handling failed");
            }
            leg.unreleased = false;
            self.drain(id, false);
        }
    }

    /// Sends the fast ingress's feedback due at `now` for leg `id` (transport feedback, NACKs,
    /// receiver reports), each sealed with our SRTCP on the leg's own sender SSRC, to
    /// [`feedback_destination`].
    fn ingress_feedback(&mut self, id: u64, now: Instant) {
        let Some(leg) = self.legs.get_mut(&id) else {
            return;
        };
        let Leg {
            ingress,
            srtp,
            dest,
            ..
        } = leg;
        let Some(ingress) = ingress.as_deref_mut() else {
            return;
        };
        // Polled whenever due, sendable or not, so that its deadlines move on.
        let mut out = Vec::new();
        let Some(done) = ingress.core.poll_due(now, &mut out) else {
            return;
        };
        if tracing::enabled!(tracing::Level::TRACE) {
            for p in &out {
                tracing::trace!(session = id, rtcp = ?p, "fast ingress feedback");
            }
        }
        let (Some(srtp), Some(to)) = (srtp.as_mut(), feedback_destination(*dest, ingress.peer))
        else {
            return;
        };
        let overhead = srtp.profile.rtcp_overhead();
        let mut sealed = Vec::with_capacity(out.len());
        for mut packet in out {
            let len = packet.len();
            packet.resize(len + overhead, 0);
            if let Ok(n) = srtp.tx.protect_rtcp(&mut packet, len) {
                packet.truncate(n);
                sealed.push(packet);
            }
        }
        let counters = self.engine.counters();
        counters.rtcp(false, u64::from(done.nacks), 0);
        counters.ingress(6, sealed.len() as u64);
        counters.ingress(7, u64::from(done.twcc));
        for packet in sealed {
            self.transmit(to, packet);
        }
    }

    /// Registers leg `id`'s next deadline (after its `Rtc`, its fast ingress or its guards
    /// moved it).
    fn reschedule(&mut self, id: u64) {
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
                    Some(leg) => {
                        let answer = super::sdp::answer(&mut leg.rtc, *offer);
                        leg.refresh_fast_streams();
                        if let Ok(text) = &answer {
                            leg.mids = super::mids_of(text);
                            leg.refresh_ingress();
                        }
                        answer
                    }
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
                self.send_plugin_rtp(session, mid, &packet);
            }
            Command::SendRtpBatch {
                targets,
                packets,
                ends,
            } => {
                let mut start = 0;
                for ((session, mid), end) in targets.into_iter().zip(ends) {
                    if let Some(packet) = packets.get(start..end) {
                        self.send_plugin_rtp(session, mid, packet);
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
                    let counters = self.engine.counters();
                    if let Some(mid) = mid {
                        leg.request_keyframe(
                            KeyframeOf::Mid(mid),
                            KeyframeRequestKind::Pli,
                            counters,
                        );
                    }
                    for ssrc in ssrcs {
                        leg.request_keyframe(
                            KeyframeOf::Ssrc(ssrc),
                            KeyframeRequestKind::Pli,
                            counters,
                        );
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
            leg.request_keyframe(
                KeyframeOf::Mid(src_mid),
                KeyframeRequestKind::Pli,
                self.engine.counters(),
            );
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
                Ok(Output::Transmit(t)) => {
                    // SRTP and SRTCP go to the selected ICE pair (a STUN reply goes where
                    // its check came from, which may be another candidate).
                    if let Some(rtcp) = srtp_kind(&t.contents) {
                        leg.dest = Some(t.destination);
                        // str0m's RTCP-only SSRC, allocated lazily, hit ours: stop ours.
                        if rtcp
                            && leg.ingress.as_ref().is_some_and(|i| {
                                t.contents.get(4..8) == Some(&i.core.own_ssrc.to_be_bytes()[..])
                            })
                        {
                            leg.stop_ingress();
                        }
                        if !rtcp && leg.anchors > 0 {
                            leg.released(&t.contents);
                        }
                    }
                    self.transmit(t.destination, t.contents.into());
                }
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
        self.reschedule(id);
    }

    fn event(&mut self, id: u64, event: Event) {
        match event {
            Event::Connected => {
                if let Some(leg) = self.legs.get_mut(&id) {
                    // DTLS handed its keying material to the tap in the drain that emits this.
                    let profile = leg.own_srtp().map(|s| s.profile);
                    self.engine.counters().srtp_profile(profile);
                    let fast = leg.start_ingress(Instant::now());
                    if fast {
                        self.engine.counters().ingress(0, 1);
                    }
                    tracing::debug!(session = id, fast, "media leg's inbound RTP: fast ingress");
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
            Event::RtpPacket(packet) => self.rtp_in(id, Inbound::from(packet)),
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
                            src_leg.request_keyframe(
                                KeyframeOf::Mid(src_mid),
                                req.kind,
                                self.engine.counters(),
                            );
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

    /// An incoming packet (from str0m, or opened by the fast ingress): forwarded, else handed
    /// to the plugin.
    fn rtp_in(&mut self, id: u64, mut packet: Inbound) {
        let Some(leg) = self.legs.get_mut(&id) else {
            return;
        };
        let ssrc = packet.ssrc;
        let mid = match leg.rx_mids.get(&ssrc) {
            Some(mid) => *mid,
            None => {
                let Some(mid) = leg
                    .rtc
                    .direct_api()
                    .stream_rx(&Ssrc::from(ssrc))
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
                    pt: *packet.pt,
                    marker: packet.marker,
                    seq: packet.seq16,
                    timestamp: packet.timestamp,
                    ssrc,
                    payload: &packet.payload,
                },
                &packet.csrc[..packet.csrc_count.min(15)],
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
        let src_pt = packet.pt;
        let codec = leg
            .rtc
            .codec_config()
            .params()
            .iter()
            .find(|p| p.pt() == src_pt)
            .map(|p| p.spec());
        let last = targets.len().saturating_sub(1);
        let video = kind == Some(MediaKind::Video);
        let now = Instant::now();
        for (i, &(dst, dst_mid)) in targets.iter().enumerate() {
            let Some(dst_leg) = self.legs.get_mut(&dst) else {
                continue;
            };
            // The same codec may have another payload type on the other leg.
            let params = dst_leg.rtc.codec_config().params();
            let found = if dst == id {
                params.iter().find(|p| p.pt() == src_pt)
            } else {
                codec.and_then(|c| {
                    params
                        .iter()
                        .find(|p| p.spec().codec == c.codec && p.spec().clock_rate == c.clock_rate)
                })
            };
            let (pt, rtx_pt) = match (found, dst == id) {
                (Some(p), _) => (p.pt(), p.resend()),
                (None, true) => (src_pt, None),
                (None, false) => continue,
            };
            let step = if kind == Some(MediaKind::Audio) {
                960
            } else {
                3000
            };
            let state = dst_leg.tx.entry(dst_mid).or_default();
            let rewritten =
                state
                    .rewriter
                    .rewrite(u64::from(ssrc), packet.seq, packet.timestamp, step);
            // From before the source's first packet since the switch: no place in the output.
            let Some((seq, ts, switched)) = rewritten else {
                self.engine.counters().fast(4);
                continue;
            };
            if switched {
                // The output's timestamps now follow another clock: str0m's sender reports
                // must learn the new relation from this packet (module docs, "Fast egress").
                if let Some(fast) = state.fast.as_deref_mut() {
                    fast.anchored = None;
                }
            }
            // The last target takes the packet's payload and extension values; only the
            // others need copies (none in an echo or a one-to-one forward).
            let payload = if i == last {
                std::mem::take(&mut packet.payload)
            } else {
                packet.payload.clone()
            };
            let out = Outgoing {
                pt: *pt,
                rtx_pt: rtx_pt.map(|p| *p),
                marker: packet.marker,
                seq,
                ts,
                ext: &packet.ext,
            };
            match dst_leg.route(dst_mid, seq, video, now) {
                Route::Skip => self.engine.counters().fast(4),
                Route::Fast(to) => {
                    let sealed = dst_leg.seal_forwarded(dst_mid, &out, payload, now);
                    if let Some(datagram) = sealed {
                        self.send_sealed(to, datagram);
                    }
                }
                Route::Str0m { anchor } => {
                    if anchor {
                        dst_leg.cache_str0m_write(dst_mid, &out, &payload, now);
                        self.engine.counters().fast(1);
                    }
                    let ext_vals = if i == last {
                        std::mem::take(&mut packet.ext)
                    } else {
                        packet.ext.clone()
                    };
                    let mut api = dst_leg.rtc.direct_api();
                    let Some(tx) = api.stream_tx_by_mid(dst_mid, None) else {
                        continue;
                    };
                    // On a fast leg str0m must never answer a NACK for a forwarded stream: it
                    // would send on the RTX SSRC the driver sends on (module docs).
                    let write = RtpWrite::new(pt, SeqNo::from(seq), ts, packet.arrival, payload)
                        .marker(packet.marker)
                        .ext_vals(ext_vals)
                        .nackable(video && !dst_leg.fast_egress);
                    tx.write_rtp(write);
                    dst_leg.unreleased = true;
                    self.dirty.insert(dst);
                }
            }
            if switched && kind == Some(MediaKind::Video) {
                if let Some(src_leg) = self.legs.get_mut(&id) {
                    src_leg.request_keyframe(
                        KeyframeOf::Mid(mid),
                        KeyframeRequestKind::Pli,
                        self.engine.counters(),
                    );
                    src_leg.unreleased = true;
                    self.dirty.insert(id);
                }
            }
        }
    }

    /// An inbound SRTP packet of a fast-ingress leg (module docs, "Fast ingress"): opened with
    /// the leg's own context (replay and rollover there), recorded for the feedback, un-RTX'd,
    /// and handed to `rtp_in` as str0m's packets are. What it cannot place is dropped and
    /// counted, never passed to str0m (the leg's transport feedback is ours alone).
    ///
    /// False when the leg was just handed to str0m (every stream place taken by a live one, or
    /// our SRTP context full): the caller gives str0m this datagram.
    fn fast_rtp_in(
        &mut self,
        id: u64,
        bytes: &[u8],
        source: SocketAddr,
        arrival: Arrival,
        now: Instant,
    ) -> bool {
        let counters = self.engine.counters();
        let Some(leg) = self.legs.get_mut(&id) else {
            return true;
        };
        let mut buf = bytes.to_vec();
        let Some(srtp) = leg.own_srtp() else {
            return true;
        };
        let opened = match srtp.rx.unprotect_rtp(&mut buf) {
            Ok(o) => o,
            Err(SrtpError::AuthFailed) => {
                counters.ingress(2, 1);
                return true;
            }
            Err(SrtpError::Replayed | SrtpError::TooOld) => {
                counters.ingress(3, 1);
                return true;
            }
            Err(SrtpError::TooManySsrcs) => {
                leg.stop_ingress();
                return false;
            }
            Err(_) => {
                counters.ingress(4, 1);
                return true;
            }
        };
        counters.ingress(1, 1);
        if arrival.stamped {
            counters.ingress(9, 1);
        }
        if let Some(ingress) = leg.ingress.as_deref_mut() {
            ingress.peer = Some(source);
        }
        buf.truncate(opened.len);
        match leg.place_inbound(&buf, opened.index, arrival, now) {
            Ok(packet) => {
                if packet.1 {
                    counters.ingress(5, 1);
                }
                self.rtp_in(id, packet.0);
            }
            Err(_) if leg.ingress.as_ref().is_some_and(|i| i.hand_back) => {
                tracing::warn!(
                    session = id,
                    "fast ingress: every stream place live; str0m takes the leg"
                );
                leg.stop_ingress();
                return false;
            }
            Err(Dropped::Unplaced) => counters.ingress(4, 1),
            Err(Dropped::Expected) => counters.ingress(8, 1),
        }
        self.ingress_feedback(id, now);
        self.reschedule(id);
        true
    }

    /// A packet from a plugin, on stream `mid` of leg `session`: its own sequence numbers,
    /// extended. On a fast-egress leg sealed by the driver like a forwarded packet (module
    /// docs, "Fast egress"), else written through str0m.
    fn send_plugin_rtp(&mut self, session: u64, mid: Mid, packet: &[u8]) {
        let Some(leg) = self.legs.get_mut(&session) else {
            return;
        };
        let Some(p) = rtp::parse(packet) else {
            return;
        };
        let kind = leg.rtc.media(mid).map(|m| m.kind());
        let video = kind == Some(MediaKind::Video);
        let state = leg.tx.entry(mid).or_default();
        let plugin_seq = state.plugin_seq.extend(p.seq);
        // The plugin's packets take the stream's one numbering too, as a source of their own
        // (review of the fast egress, #5): forwarded and plugin-sent packets on one stream
        // never use one index twice.
        let step = if video { 3000 } else { 960 };
        let Some((seq, ts, _)) = state.rewriter.rewrite(
            PLUGIN_SOURCE | u64::from(p.ssrc),
            plugin_seq,
            p.timestamp,
            step,
        ) else {
            self.engine.counters().fast(4);
            return;
        };
        let now = Instant::now();
        let route = leg.route(mid, seq, video, now);
        let rtx_pt = match route {
            Route::Skip => {
                self.engine.counters().fast(4);
                return;
            }
            Route::Fast(_) | Route::Str0m { anchor: true } if video => leg
                .rtc
                .codec_config()
                .params()
                .iter()
                .find(|c| *c.pt() == p.pt)
                .and_then(|c| c.resend())
                .map(|pt| *pt),
            _ => None,
        };
        let ext = ExtensionValues::default();
        let out = Outgoing {
            pt: p.pt,
            rtx_pt,
            marker: p.marker,
            seq,
            ts,
            ext: &ext,
        };
        let payload: Arc<[u8]> = Arc::from(p.payload);
        match route {
            Route::Skip => {}
            Route::Fast(to) => {
                if let Some(datagram) = leg.seal_forwarded(mid, &out, payload, now) {
                    self.send_sealed(to, datagram);
                }
            }
            Route::Str0m { anchor } => {
                if anchor {
                    leg.cache_str0m_write(mid, &out, &payload, now);
                    self.engine.counters().fast(1);
                }
                // On a fast leg str0m never answers NACKs (the driver does, module docs).
                let nackable = video && !leg.fast_egress;
                let mut api = leg.rtc.direct_api();
                let Some(tx) = api.stream_tx_by_mid(mid, None) else {
                    return;
                };
                let write = RtpWrite::new(p.pt.into(), SeqNo::from(seq), ts, now, payload)
                    .marker(p.marker)
                    .nackable(nackable);
                tx.write_rtp(write);
                self.touch(session);
            }
        }
    }

    /// Sends a packet the fast egress sealed (debug builds: unless the loss hook leaves it out).
    fn send_sealed(&mut self, to: SocketAddr, datagram: Vec<u8>) {
        self.engine.counters().fast(0);
        #[cfg(debug_assertions)]
        if self.debug_drop() {
            return;
        }
        self.transmit(to, datagram);
    }

    /// Debug builds: whether to leave out this sealed packet ([`MediaEngine::drop_fast_egress_every`]).
    #[cfg(debug_assertions)]
    fn debug_drop(&mut self) -> bool {
        let every = self.engine.counters().drop_every();
        if every == 0 {
            return false;
        }
        self.sealed += 1;
        if self.sealed.is_multiple_of(every) {
            self.engine.counters().fast(3);
            return true;
        }
        false
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

/// RTP or RTCP (RFC 7983: the first byte is 128..=191), and which: RTCP's packet type is
/// 192..=223 (RFC 5761).
pub(crate) fn srtp_kind(bytes: &[u8]) -> Option<bool> {
    if !bytes.first().is_some_and(|b| (128..=191).contains(b)) {
        return None;
    }
    Some(bytes.get(1).is_some_and(|b| (192..=223).contains(b)))
}

/// Debug builds: opens a copy of each inbound SRTP datagram with our own receive context and
/// counts what opened (`/metrics` has no place for it: [`MediaEngine::srtp_verify`]). After
/// DTLS every packet str0m accepts must open here too; a shortfall means our keys, index
/// estimate or replay window disagree with str0m's. SRTCP is opened (once) by
/// [`open_inbound_rtcp`].
#[cfg(debug_assertions)]
fn verify_inbound_rtp(leg: &mut Leg, bytes: &[u8], counters: &super::MediaCounters) {
    let id = leg.id;
    let Some(srtp) = leg.own_srtp() else {
        return;
    };
    let mut copy = bytes.to_vec();
    let opened = srtp.rx.unprotect_rtp(&mut copy).map(|_| ());
    if let Err(e) = opened {
        tracing::warn!(session = id, error = %e, "our SRTP context did not open an inbound packet");
    }
    counters.srtp_verified(false, opened.is_ok());
}

/// Opens a copy of an inbound SRTCP datagram with our own receive context (the fast egress
/// reads the peer's NACKs in it; str0m still gets the datagram as it came). Debug builds
/// count every one, as [`verify_inbound_rtp`] does for SRTP.
fn open_inbound_rtcp(
    leg: &mut Leg,
    bytes: &[u8],
    counters: &super::MediaCounters,
) -> Option<Vec<u8>> {
    let id = leg.id;
    let srtp = leg.own_srtp()?;
    let mut copy = bytes.to_vec();
    let opened = srtp.rx.unprotect_rtcp(&mut copy);
    #[cfg(debug_assertions)]
    {
        if let Err(e) = &opened {
            tracing::warn!(session = id, error = %e, "our SRTCP context did not open an inbound packet");
        }
        counters.srtp_verified(true, opened.is_ok());
    }
    #[cfg(not(debug_assertions))]
    let _ = (id, counters);
    let len = opened.ok()?.len;
    copy.truncate(len);
    Some(copy)
}

/// Where the fast ingress's feedback goes: where the peer's last authenticated RTP came from
/// (the path it uses now: after an ICE path change, str0m's send address follows only on its
/// next send, up to a second later), else where str0m sends the leg's media.
fn feedback_destination(str0m: Option<SocketAddr>, peer: Option<SocketAddr>) -> Option<SocketAddr> {
    peer.or(str0m)
}

/// The 64-bit sequence number nearest `near` whose low 16 bits are `seq`.
fn extend_near(near: u64, seq: u16) -> u64 {
    let base = near & !0xffff;
    [
        base.checked_sub(0x1_0000),
        Some(base),
        base.checked_add(0x1_0000),
    ]
    .into_iter()
    .flatten()
    .map(|b| b | u64::from(seq))
    .min_by_key(|c| c.abs_diff(near))
    .unwrap_or(u64::from(seq))
}

/// The header-extension values the fast ingress read, as str0m hands them up (what the egress
/// and str0m's writes keep).
fn extension_values(e: &Extensions) -> ExtensionValues {
    let mut v = ExtensionValues::default();
    if let Some((voice, level)) = e.audio_level {
        v.audio_level = Some(-((level & 0x7f) as i8));
        v.voice_activity = Some(voice);
    }
    v.video_orientation = e.video_orientation.map(VideoOrientation::from);
    if let Some([a, b, c]) = e.playout_delay {
        let min = (u64::from(a) << 4) | u64::from(b >> 4);
        let max = (u64::from(b & 0x0f) << 8) | u64::from(c);
        v.play_delay_min = Some(MediaTime::from_hundredths(min));
        v.play_delay_max = Some(MediaTime::from_hundredths(max));
    }
    v
}

/// The sender reports in the peer's (opened) RTCP, for the fast ingress's receiver reports.
fn note_sender_reports(ingress: &mut Ingress, plain: &[u8], now: Instant) {
    rtp::for_each_rtcp(plain, |pt, _, body| {
        if pt == 200 && body.len() >= 16 {
            let ssrc = u32::from_be_bytes([body[4], body[5], body[6], body[7]]);
            let ntp = u64::from_be_bytes([
                body[8], body[9], body[10], body[11], body[12], body[13], body[14], body[15],
            ]);
            if let Some(stream) = ingress.find(ssrc) {
                stream.sender_report(ntp, now);
            }
        }
    });
}

/// Appends the header of one forwarded packet as `fast` sends it: the receiver's SSRC and
/// extension ids, the values the sender gave kept where the receiver negotiated them.
fn write_header(out: &mut Vec<u8>, fast: &FastStream, p: &Outgoing<'_>) -> usize {
    let ev = p.ext;
    let audio_level = match (ev.audio_level, ev.voice_activity) {
        // RFC 6464: V, then the level as -dBov.
        (Some(level), Some(voice)) => {
            Some(if voice { 0x80 } else { 0 } | (level.unsigned_abs() & 0x7f))
        }
        _ => None,
    };
    let playout_delay = match (ev.play_delay_min, ev.play_delay_max) {
        (Some(min), Some(max)) => {
            let min = (min.rebase(Frequency::HUNDREDTHS).numer() & 0xfff) as u16;
            let max = (max.rebase(Frequency::HUNDREDTHS).numer() & 0xfff) as u16;
            Some([
                (min >> 4) as u8,
                ((min << 4) as u8) | (max >> 8) as u8,
                max as u8,
            ])
        }
        _ => None,
    };
    let header = EgressHeader {
        pt: p.pt,
        marker: p.marker,
        // The index's low 16 bits (what SRTP checks against the header).
        seq: p.seq as u16,
        timestamp: p.ts,
        ssrc: fast.ssrc,
        mid: fast.mid.as_bytes(),
        audio_level,
        video_orientation: ev.video_orientation.map(|o| o as u8),
        playout_delay,
    };
    rtp::write_egress_header(out, &header, &fast.exts)
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
    fn the_fast_egress_seals_only_with_current_keys_once_per_index_and_anchors_in_str0m() {
        use crate::media::srtp::SrtpProfile as Ours;
        use str0m::media::Direction;
        crate::media::install_crypto();
        let now = Instant::now();
        let settings = LegSettings {
            candidate: "127.0.0.1:40000".parse().unwrap(),
            codecs: vec![CodecName::Vp8],
            bandwidth_estimation: false,
        };
        let (mut rtc, ufrag, keys) = new_leg(&settings, now);
        let peer_addr: SocketAddr = "127.0.0.1:50000".parse().unwrap();
        let mut peer = str0m::RtcConfig::new()
            .set_rtp_mode(true)
            .clear_codecs()
            .enable_vp8(true)
            .build(now);
        peer.add_local_candidate(str0m::Candidate::host(peer_addr, "udp").unwrap());
        let mut change = peer.sdp_api();
        let mid = change.add_media(MediaKind::Video, Direction::SendRecv, None, None, None);
        let (offer, _) = change.apply().unwrap();
        let offer = crate::media::sdp::check_offer(offer.to_sdp_string().as_bytes()).unwrap();
        crate::media::sdp::answer(&mut rtc, offer).unwrap();
        let t = Duration::from_secs(10);
        let mut leg =
            Leg::new(1, rtc, ufrag, keys.clone(), Arc::new(Quiet), now, t, t).with_fast_egress();

        let anchor = Route::Str0m { anchor: true };
        let str0m = Route::Str0m { anchor: false };
        // Review #2 and #6: every write is claimed, on any leg and any route.
        leg.fast_egress = false;
        assert_eq!(
            leg.route(mid, 0, true, now),
            str0m,
            "a leg without fast egress"
        );
        assert_eq!(
            leg.route(mid, 0, true, now),
            Route::Skip,
            "its index is used"
        );
        leg.fast_egress = true;
        assert_eq!(
            leg.route(mid, 1, true, now),
            str0m,
            "no destination, no keys"
        );
        assert_eq!(
            leg.route(mid, 1, true, now),
            Route::Skip,
            "claimed all the same"
        );
        leg.dest = Some(peer_addr);
        assert_eq!(leg.route(mid, 2, true, now), str0m, "no keys");
        let first = [7u8; 88];
        keys.put(&first, SrtpProfile::AEAD_AES_256_GCM, false);
        assert_eq!(
            leg.route(mid, 3, true, now),
            anchor,
            "the first goes through str0m"
        );
        assert_eq!(
            leg.route(mid, 4, true, now),
            anchor,
            "behind it, until str0m sent it"
        );
        let ssrc = leg.tx[&mid].fast.as_ref().unwrap().ssrc;
        let mut sent_by_str0m = vec![0x80, 96, 0, 3, 0, 0, 0, 0];
        sent_by_str0m.extend_from_slice(&ssrc.to_be_bytes());
        leg.released(&sent_by_str0m);
        assert_eq!(leg.anchors, 0);
        assert_eq!(leg.route(mid, 5, true, now), Route::Fast(peer_addr));
        assert_eq!(
            leg.route(mid, 5, true, now),
            Route::Skip,
            "an index is used once"
        );
        assert_eq!(leg.route(mid, 3, true, now), Route::Skip, "str0m's too");
        let later = now + STR0M_ANCHOR_INTERVAL;
        assert_eq!(leg.route(mid, 6, true, later), anchor, "one a second");
        // Should str0m never send it, the stream goes fast again after a while.
        let later = later + ANCHOR_RELEASE_WAIT;
        assert_eq!(leg.route(mid, 7, true, later), Route::Fast(peer_addr));
        assert_eq!(leg.anchors, 0);

        // Sealed with the leg's keys (the DTLS server's half): the peer's side opens it, with
        // the receiver's MID in the header.
        let ext = ExtensionValues::default();
        let out = |seq| Outgoing {
            pt: 96,
            rtx_pt: Some(97),
            marker: true,
            seq,
            ts: 1234,
            ext: &ext,
        };
        let sealed = leg
            .seal_forwarded(mid, &out(7), Arc::from(&b"six"[..]), later)
            .expect("sealed");
        let peer_rx = |material: &[u8]| {
            LegSrtp::from_keying_material(Ours::AeadAes256Gcm, material, true)
                .unwrap()
                .rx
        };
        let mut rx1 = peer_rx(&first);
        let mut buf = sealed.clone();
        let opened = rx1
            .unprotect_rtp(&mut buf)
            .expect("opens with the leg's keys");
        assert_eq!(opened.index, 7);
        assert_eq!(&buf[opened.header_len..opened.len], b"six");
        let header = rtp::parse(&buf[..opened.len]).unwrap();
        assert_eq!(header.ssrc, leg.tx[&mid].fast.as_ref().unwrap().ssrc);

        // Unusable keys: nothing is sealed fast any more.
        keys.put(&[1; 10], SrtpProfile::AEAD_AES_128_GCM, false);
        assert_eq!(leg.route(mid, 9, true, later), str0m);
        // New keys: sealed under them, never under the old ones.
        let second = [9u8; 88];
        keys.put(&second, SrtpProfile::AEAD_AES_256_GCM, false);
        assert_eq!(leg.route(mid, 10, true, later), Route::Fast(peer_addr));
        let sealed = leg
            .seal_forwarded(mid, &out(10), Arc::from(&b"eight"[..]), later)
            .unwrap();
        assert!(
            rx1.unprotect_rtp(&mut sealed.clone()).is_err(),
            "stale keys"
        );
        let mut rx2 = peer_rx(&second);
        let mut buf = sealed.clone();
        let opened = rx2.unprotect_rtp(&mut buf).expect("the new keys");
        assert_eq!(&buf[opened.header_len..opened.len], b"eight");

        // Review #7: a stream removed while its anchor waits does not keep `anchors` up.
        let later = later + STR0M_ANCHOR_INTERVAL;
        assert_eq!(leg.route(mid, 11, true, later), anchor);
        assert_eq!(leg.anchors, 1);
        leg.tx.get_mut(&mid).unwrap().fast.as_mut().unwrap().live = false;
        assert_eq!(leg.route(mid, 12, true, later), str0m);
        assert_eq!(leg.anchors, 0);
    }

    /// A leg answered to a str0m peer's video offer (VP8 with RTX), keys in its slot (we are
    /// the DTLS server), fast ingress started; and the peer's sending context.
    fn ingress_leg() -> (Leg, Mid, SrtpTx, Arc<KeySlot>) {
        let (leg, mid, tx, keys, _) = ingress_leg_and_peer();
        (leg, mid, tx, keys)
    }

    /// [`ingress_leg`] and the peer, its offer answered (it may offer again).
    fn ingress_leg_and_peer() -> (Leg, Mid, SrtpTx, Arc<KeySlot>, str0m::Rtc) {
        use crate::media::srtp::SrtpProfile as Ours;
        use str0m::media::Direction;
        crate::media::install_crypto();
        let now = Instant::now();
        let settings = LegSettings {
            candidate: "127.0.0.1:40000".parse().unwrap(),
            codecs: vec![CodecName::Vp8],
            bandwidth_estimation: false,
        };
        let (mut rtc, ufrag, keys) = new_leg(&settings, now);
        let mut peer = str0m::RtcConfig::new()
            .set_rtp_mode(true)
            .clear_codecs()
            .enable_vp8(true)
            .build(now);
        peer.add_local_candidate(
            str0m::Candidate::host("127.0.0.1:50000".parse().unwrap(), "udp").unwrap(),
        );
        let mut change = peer.sdp_api();
        let mid = change.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
        let (offer, pending) = change.apply().unwrap();
        let offer = crate::media::sdp::check_offer(offer.to_sdp_string().as_bytes()).unwrap();
        let answer = crate::media::sdp::answer(&mut rtc, offer).unwrap();
        peer.sdp_api()
            .accept_answer(
                pending,
                str0m::change::SdpAnswer::from_sdp_string(&answer).unwrap(),
            )
            .unwrap();
        let t = Duration::from_secs(10);
        let mut leg = Leg::new(1, rtc, ufrag, keys.clone(), Arc::new(Quiet), now, t, t)
            .with_mids(vec![mid])
            .with_fast_ingress();
        let material = [5u8; 88];
        keys.put(&material, SrtpProfile::AEAD_AES_256_GCM, false);
        assert!(
            leg.start_ingress(now),
            "keys, no simulcast: the fast ingress starts"
        );
        let peer_tx = LegSrtp::from_keying_material(Ours::AeadAes256Gcm, &material, true)
            .unwrap()
            .tx;
        (leg, mid, peer_tx, keys, peer)
    }

    /// The peer offers again (`change` adds to its session, `edit` rewrites the offer's text)
    /// and the leg answers as the driver does (`Command::Renegotiate`).
    fn renegotiate(
        leg: &mut Leg,
        peer: &mut str0m::Rtc,
        change: impl FnOnce(&mut str0m::change::SdpApi<'_>),
        edit: impl FnOnce(String) -> String,
    ) {
        let mut api = peer.sdp_api();
        change(&mut api);
        let (offer, pending) = api.apply().expect("a change to offer");
        let text = edit(offer.to_sdp_string());
        let offer = crate::media::sdp::check_offer(text.as_bytes()).unwrap();
        let answer = crate::media::sdp::answer(&mut leg.rtc, offer).unwrap();
        leg.refresh_fast_streams();
        leg.mids = crate::media::mids_of(&answer);
        leg.refresh_ingress();
        peer.sdp_api()
            .accept_answer(
                pending,
                str0m::change::SdpAnswer::from_sdp_string(&answer).unwrap(),
            )
            .unwrap();
    }

    #[test]
    fn a_renegotiation_keeps_the_fast_ingress_unless_it_brings_simulcast_or_splits_an_extension() {
        use str0m::media::{Direction, Simulcast, SimulcastLayer};
        // A second stream (audio, without video orientation: merged): still fast, ids kept.
        let (mut leg, _mid, _tx, _keys, mut peer) = ingress_leg_and_peer();
        let ids = leg.ingress.as_ref().unwrap().ids;
        renegotiate(
            &mut leg,
            &mut peer,
            |api| {
                api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
            },
            |offer| offer,
        );
        assert_eq!(leg.mids.len(), 2);
        assert_eq!(leg.ingress.as_ref().map(|i| i.ids), Some(ids));
        // The MID extension under another id in the new section only: str0m keeps the ids it
        // negotiated first (one map for the session), and so do we: still fast, ids as str0m's.
        let mid_id = ids.mid.unwrap();
        let (mut leg2, _mid, _tx, _keys, mut peer2) = ingress_leg_and_peer();
        renegotiate(
            &mut leg2,
            &mut peer2,
            |api| {
                api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
            },
            |offer| {
                // An id no section of the offer uses (RFC 8285: one extension per id).
                let used: Vec<u8> = offer
                    .lines()
                    .filter_map(|l| l.strip_prefix("a=extmap:"))
                    .filter_map(|l| l.split([' ', '/']).next()?.parse().ok())
                    .collect();
                let free = (1..15u8).find(|id| !used.contains(id)).unwrap();
                let from = format!("a=extmap:{mid_id} urn:ietf:params:rtp-hdrext:sdes:mid");
                let to = format!("a=extmap:{free} urn:ietf:params:rtp-hdrext:sdes:mid");
                // The last section is the new one.
                let at = offer.rfind(&from).expect("the new section's MID extension");
                let edited = format!("{}{to}{}", &offer[..at], &offer[at + from.len()..]);
                assert_eq!(edited.matches(&to).count(), 1);
                edited
            },
        );
        assert_eq!(leg2.extension_ids(), Some(ids));
        assert_eq!(leg2.ingress.as_ref().map(|i| i.ids), Some(ids));
        // Simulcast offered on a new video section: str0m takes the leg.
        let mut simulcast = Simulcast::new();
        simulcast.add_send_layer(SimulcastLayer::new("h"));
        simulcast.add_send_layer(SimulcastLayer::new("l"));
        renegotiate(
            &mut leg,
            &mut peer,
            |api| {
                api.add_media(
                    MediaKind::Video,
                    Direction::SendOnly,
                    None,
                    None,
                    Some(simulcast),
                );
            },
            |offer| offer,
        );
        assert_eq!(leg.mids.len(), 3);
        // For the simulcast alone: the ids still agree.
        assert!(leg.extension_ids().is_some());
        assert!(leg.mids.iter().any(|m| matches!(
            leg.rtc.media(*m).map(|m| m.rids_rx()),
            Some(str0m::media::Rids::Specific(_))
        )));
        assert!(leg.ingress.is_none() && leg.ingress_off);
    }

    /// An SRTP packet from the peer: `ssrc`, `pt`, `seq`, the MID extension when `mid_id`,
    /// `payload`; sealed at index `seq`.
    fn sealed(
        tx: &SrtpTx,
        ssrc: u32,
        pt: u8,
        seq: u64,
        mid: Option<(u8, &str)>,
        payload: &[u8],
    ) -> Vec<u8> {
        let mut p = vec![0x80, pt, 0, 0, 0, 0, 0x30, 0x39];
        p[2..4].copy_from_slice(&(seq as u16).to_be_bytes());
        p.extend_from_slice(&ssrc.to_be_bytes());
        if let Some((id, mid)) = mid {
            p[0] |= 0x10;
            let mut ext = vec![(id << 4) | (mid.len() as u8 - 1)];
            ext.extend_from_slice(mid.as_bytes());
            while ext.len() % 4 != 0 {
                ext.push(0);
            }
            p.extend_from_slice(&[0xbe, 0xde, 0, (ext.len() / 4) as u8]);
            p.extend_from_slice(&ext);
        }
        p.extend_from_slice(payload);
        tx.protect_rtp_vec(&mut p, seq).unwrap();
        p
    }

    #[test]
    fn the_fast_ingress_places_streams_unrtxes_only_repairs_of_holes_and_stays_bounded() {
        let (mut leg, mid, peer, _keys) = ingress_leg();
        let now = Instant::now();
        let ingress = leg.ingress.as_ref().unwrap();
        let own = ingress.core.own_ssrc;
        let mid_id = ingress.ids.mid.expect("MID negotiated");
        assert_eq!(
            leg.srtp.as_ref().unwrap().tx.own_rtcp_ssrc(),
            Some(own),
            "our feedback's SSRC is reserved on our SRTCP"
        );
        let params = leg.rtc.codec_config().params();
        let vp8 = params.iter().find(|p| p.resend().is_some()).unwrap();
        let (pt, rtx_pt) = (*vp8.pt(), *vp8.resend().unwrap());
        let m = Some((mid_id, mid.as_ref()));
        let open = |leg: &mut Leg, bytes: &[u8]| {
            let mut buf = bytes.to_vec();
            let o = leg.own_srtp().unwrap().rx.unprotect_rtp(&mut buf)?;
            buf.truncate(o.len);
            Ok::<_, SrtpError>(
                leg.place_inbound(&buf, o.index, Arrival::read(now), now)
                    .ok(),
            )
        };
        // The main stream, placed by its MID: 1, 2, 3, 5 (4 lost).
        let main = 0x1111;
        let first = sealed(&peer, main, pt, 1, m, b"one");
        for (seq, data) in [(1, &first), (2, &sealed(&peer, main, pt, 2, m, b"two"))] {
            let (p, repaired) = open(&mut leg, data).unwrap().expect("placed");
            assert_eq!((p.ssrc, p.seq, *p.pt, repaired), (main, seq, pt, false));
        }
        for seq in [3, 5] {
            assert!(open(&mut leg, &sealed(&peer, main, pt, seq, None, b"x"))
                .unwrap()
                .is_some());
        }
        assert_eq!(leg.rx_mids.get(&main), Some(&mid));
        assert!(
            leg.rtc.direct_api().stream_rx(&Ssrc::from(main)).is_some(),
            "str0m knows the stream: key-frame requests for it work"
        );
        // RTX on another SSRC: 4 was missing, so its repair is the packet, un-RTX'd.
        let rtx = 0x2222;
        let repair = |seq: u64, osn: u16| {
            let mut payload = osn.to_be_bytes().to_vec();
            payload.extend_from_slice(b"four");
            sealed(&peer, rtx, rtx_pt, seq, m, &payload)
        };
        let (p, repaired) = open(&mut leg, &repair(1, 4)).unwrap().unwrap();
        assert_eq!(
            (p.ssrc, p.seq, p.seq16, *p.pt, repaired),
            (main, 4, 4, pt, true)
        );
        assert_eq!(&p.payload[..], b"four");
        // Review #12: what senders send anyway counts apart from what cannot be placed.
        let raw = |leg: &mut Leg, bytes: Vec<u8>| {
            let mut buf = bytes;
            let o = leg.own_srtp().unwrap().rx.unprotect_rtp(&mut buf).unwrap();
            buf.truncate(o.len);
            leg.place_inbound(&buf, o.index, Arrival::read(now), now)
                .err()
        };
        assert_eq!(
            raw(&mut leg, repair(10, 4)),
            Some(Dropped::Expected),
            "repair of a packet we have"
        );
        assert_eq!(
            raw(&mut leg, repair(11, 900)),
            Some(Dropped::Unplaced),
            "OSN ahead"
        );
        // The original of 4 after its repair: delivered already (review #6).
        assert!(open(&mut leg, &sealed(&peer, main, pt, 4, None, b"four"))
            .unwrap()
            .is_none());
        // A second repair of 4, one of a packet received (3), one ahead of the stream (9), one
        // from before the window: authenticated, and dropped.
        for (seq, osn) in [(2, 4), (3, 3), (4, 9), (5, 60_000)] {
            assert!(
                open(&mut leg, &repair(seq, osn)).unwrap().is_none(),
                "osn {osn}"
            );
        }
        // An RTX packet too short to carry an OSN.
        let short = sealed(&peer, rtx, rtx_pt, 6, m, b"x");
        assert!(open(&mut leg, &short).unwrap().is_none());
        // Replayed and forged packets do not open.
        assert_eq!(open(&mut leg, &first).err(), Some(SrtpError::Replayed));
        let mut forged = sealed(&peer, main, pt, 6, None, b"six");
        let last = forged.len() - 1;
        forged[last] ^= 1;
        assert_eq!(open(&mut leg, &forged).err(), Some(SrtpError::AuthFailed));
        // Padding only on the main SSRC (review #4): no hole, handed on empty (as str0m did),
        // and the next packet makes no hole of it either.
        let mut pad = vec![0xa0, pt, 0, 8, 0, 0, 0x30, 0x39];
        pad.extend_from_slice(&main.to_be_bytes());
        pad.extend_from_slice(&[0, 0, 0, 4]);
        peer.protect_rtp_vec(&mut pad, 8).unwrap();
        let (p, _) = open(&mut leg, &pad)
            .unwrap()
            .expect("padding keeps its number");
        assert_eq!((p.ssrc, p.seq, p.payload.len()), (main, 8, 0));
        assert!(open(&mut leg, &sealed(&peer, main, pt, 9, None, b"nine"))
            .unwrap()
            .is_some());
        let stream = leg.ingress.as_mut().unwrap().core.find(main).unwrap();
        assert!(!stream.is_missing(8));
        // An unknown payload type, and a stream without MID nor signalling: dropped.
        assert!(open(&mut leg, &sealed(&peer, main, 3, 7, None, b"x"))
            .unwrap()
            .is_none());
        assert!(open(&mut leg, &sealed(&peer, 0x3333, pt, 1, None, b"x"))
            .unwrap()
            .is_none());
        // A flood of authenticated new SSRCs: the streams tracked and their mids stay capped.
        let mut placed = 0;
        for ssrc in 0..200u32 {
            if let Ok(Some(_)) = open(&mut leg, &sealed(&peer, 0x10_0000 + ssrc, pt, 1, m, b"f")) {
                placed += 1;
            }
        }
        let ingress = leg.ingress.as_ref().unwrap();
        assert_eq!(ingress.core.streams(), crate::media::ingress::MAX_STREAMS);
        assert_eq!(placed, crate::media::ingress::MAX_STREAMS - 2);
        assert!(leg.rx_mids.len() <= crate::media::ingress::MAX_STREAMS);
        // Every place live: no stream dropped, the leg goes to str0m instead (review #2).
        assert!(ingress.hand_back);
    }

    #[test]
    fn a_repair_stays_with_the_main_stream_its_rtx_ssrc_first_repaired() {
        let (mut leg, mid, peer, _keys) = ingress_leg();
        let now = Instant::now();
        let mid_id = leg.ingress.as_ref().unwrap().ids.mid.unwrap();
        let m = Some((mid_id, mid.as_ref()));
        let params = leg.rtc.codec_config().params();
        let vp8 = params.iter().find(|p| p.resend().is_some()).unwrap();
        let (pt, rtx_pt) = (*vp8.pt(), *vp8.resend().unwrap());
        let place = |leg: &mut Leg, bytes: Vec<u8>| {
            let mut buf = bytes;
            let o = leg.own_srtp().unwrap().rx.unprotect_rtp(&mut buf).unwrap();
            buf.truncate(o.len);
            leg.place_inbound(&buf, o.index, Arrival::read(now), now)
        };
        let repair = |seq: u64, osn: u16| {
            let mut payload = osn.to_be_bytes().to_vec();
            payload.extend_from_slice(b"r");
            sealed(&peer, 0x2222, rtx_pt, seq, m, &payload)
        };
        // Main A with hole 2; its repair binds the RTX SSRC to A.
        for seq in [1, 3] {
            assert!(place(&mut leg, sealed(&peer, 0xa, pt, seq, m, b"a")).is_ok());
        }
        assert_eq!(place(&mut leg, repair(1, 2)).map(|p| p.0.ssrc), Ok(0xa));
        // The mid's main becomes B, with hole 11: a late repair from A's RTX SSRC is A's.
        for seq in [10, 12] {
            assert!(place(&mut leg, sealed(&peer, 0xb, pt, seq, m, b"b")).is_ok());
        }
        assert_eq!(
            place(&mut leg, repair(2, 11)).err(),
            Some(Dropped::Unplaced)
        );
        let ingress = leg.ingress.as_mut().unwrap();
        assert!(
            ingress.core.find(0xb).unwrap().is_missing(11),
            "B's hole untouched"
        );
    }

    #[test]
    fn kernel_stamped_arrivals_reach_the_transport_feedback_through_place_inbound() {
        let (mut leg, mid, peer, _keys) = ingress_leg();
        let ids = leg.ingress.as_ref().unwrap().ids;
        let mid_id = ids.mid.unwrap();
        let tcc_id = ids.transport_cc.expect("transport-cc negotiated");
        let pt = *leg.rtc.codec_config().params()[0].pt();
        let now = Instant::now() + Duration::from_secs(1);
        // Five packets 2 ms apart, read together 30 ms after the first.
        for i in 0..5u16 {
            let mut p = vec![0x90, pt, 0, 0, 0, 0, 0x30, 0x39];
            p[2..4].copy_from_slice(&(1 + i).to_be_bytes());
            p.extend_from_slice(&0x4444u32.to_be_bytes());
            let mut ext = vec![(mid_id << 4) | (mid.len() as u8 - 1)];
            ext.extend_from_slice(mid.as_bytes());
            ext.push((tcc_id << 4) | 1);
            ext.extend_from_slice(&i.to_be_bytes());
            while ext.len() % 4 != 0 {
                ext.push(0);
            }
            p.extend_from_slice(&[0xbe, 0xde, 0, (ext.len() / 4) as u8]);
            p.extend_from_slice(&ext);
            p.push(b'x');
            peer.protect_rtp_vec(&mut p, u64::from(1 + i)).unwrap();
            let o = leg.own_srtp().unwrap().rx.unprotect_rtp(&mut p).unwrap();
            p.truncate(o.len);
            let at = now - Duration::from_millis(30) + Duration::from_millis(2 * u64::from(i));
            assert!(leg
                .place_inbound(&p, o.index, Arrival::stamped(at), now)
                .is_ok());
        }
        let mut out = Vec::new();
        leg.ingress.as_mut().unwrap().core.poll(now, &mut out);
        let twcc = out
            .iter()
            .find(|p| p[1] == 205 && p[0] & 0x1f == 15)
            .expect("transport feedback");
        // Five received: one run-length chunk, then one-byte deltas of 8 ticks (2 ms).
        assert_eq!(u16::from_be_bytes([twcc[14], twcc[15]]), 5);
        assert_eq!(twcc[23..27], [8, 8, 8, 8], "{twcc:?}");
    }

    #[test]
    fn the_legs_deadline_is_its_feedbacks_bound_not_its_time() {
        let (mut leg, mid, peer, _keys) = ingress_leg();
        let ids = leg.ingress.as_ref().unwrap().ids;
        let (mid_id, tcc_id) = (ids.mid.unwrap(), ids.transport_cc.unwrap());
        let pt = *leg.rtc.codec_config().params()[0].pt();
        // Before the receiver report is due (the leg's start + 1 s).
        let now = Instant::now() + Duration::from_millis(10);
        let packet = |leg: &mut Leg, seq: u16, at: Instant| {
            let mut p = vec![0x90, pt, 0, 0, 0, 0, 0x30, 0x39];
            p[2..4].copy_from_slice(&seq.to_be_bytes());
            p.extend_from_slice(&0x4444u32.to_be_bytes());
            let mut ext = vec![(mid_id << 4) | (mid.len() as u8 - 1)];
            ext.extend_from_slice(mid.as_bytes());
            ext.push((tcc_id << 4) | 1);
            ext.extend_from_slice(&seq.to_be_bytes());
            while ext.len() % 4 != 0 {
                ext.push(0);
            }
            p.extend_from_slice(&[0xbe, 0xde, 0, (ext.len() / 4) as u8]);
            p.extend_from_slice(&ext);
            p.push(b'x');
            peer.protect_rtp_vec(&mut p, u64::from(seq)).unwrap();
            let o = leg.own_srtp().unwrap().rx.unprotect_rtp(&mut p).unwrap();
            p.truncate(o.len);
            assert!(leg
                .place_inbound(&p, o.index, Arrival::stamped(at), at)
                .is_ok());
        };
        packet(&mut leg, 1, now);
        // The first report goes at once (with the first packet).
        let core = &mut leg.ingress.as_mut().unwrap().core;
        assert!(core.due().is_some_and(|d| d.at <= now));
        core.poll(now, &mut Vec::new());
        packet(&mut leg, 2, now + Duration::from_millis(10));
        // The next is due an interval later, but the leg's deadline (the driver's wake-up) is
        // its bound: a packet in between takes it along (`Ingress::poll_due` in
        // `Driver::ingress_feedback`).
        let due = leg.ingress.as_ref().unwrap().core.due().unwrap();
        assert_eq!(due.at, now + super::super::ingress::TWCC_INTERVAL);
        assert_eq!(due.by, due.at + super::super::ingress::TWCC_SLACK);
        assert_eq!(leg.next_deadline(), Some(due.by));
    }

    #[test]
    fn a_sender_report_from_the_wire_gives_the_receiver_reports_lsr_and_dlsr() {
        let t0 = Instant::now();
        let mut ingress = Ingress::new(9, t0);
        ingress
            .stream(0x55, false, false, 48_000, t0)
            .unwrap()
            .received(1, 960, t0);
        // A compound packet as browsers send it: an SR of a stream we do not receive, the SR
        // of ours (with a report block of its own), then SDES.
        let sr = |ssrc: u32, ntp: u64| {
            let mut p = vec![0x81, 200, 0, 12];
            p.extend_from_slice(&ssrc.to_be_bytes());
            p.extend_from_slice(&ntp.to_be_bytes());
            p.extend_from_slice(&[0, 0, 0x30, 0x39, 0, 0, 0, 7, 0, 0, 0x10, 0]);
            p.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
            p.extend_from_slice(&[0; 20]);
            p
        };
        let mut compound = sr(0x77, 0x0101_0101_0202_0202);
        compound.extend(sr(0x55, 0xaabb_ccdd_1122_3344));
        compound.extend_from_slice(&[0x81, 202, 0, 3, 0, 0, 0, 0x55, 1, 2, b'a', b'b', 0, 0, 0, 0]);
        note_sender_reports(&mut ingress, &compound, t0 + Duration::from_millis(200));
        let mut out = Vec::new();
        assert_eq!(
            ingress
                .poll(t0 + Duration::from_millis(1700), &mut out)
                .reports,
            1
        );
        let rr = &out[0];
        assert_eq!(rr[1], 201);
        assert_eq!(u32::from_be_bytes(rr[8..12].try_into().unwrap()), 0x55);
        assert_eq!(
            u32::from_be_bytes(rr[24..28].try_into().unwrap()),
            0xccdd_1122,
            "LSR: the middle of the SR's NTP time"
        );
        assert_eq!(
            u32::from_be_bytes(rr[28..32].try_into().unwrap()),
            3 * 65_536 / 2,
            "DLSR: 1.5 s since the SR arrived"
        );
        // A truncated SR changes nothing.
        note_sender_reports(
            &mut ingress,
            &sr(0x55, 1)[..20],
            t0 + Duration::from_millis(1800),
        );
        out.clear();
        ingress.poll(t0 + Duration::from_millis(2700), &mut out);
        assert_eq!(
            u32::from_be_bytes(out[0][24..28].try_into().unwrap()),
            0xccdd_1122
        );
    }

    #[test]
    fn key_frame_requests_of_a_fast_ingress_leg_are_counted_here_once() {
        use std::sync::atomic::Ordering::Relaxed;
        let (mut leg, mid, peer, _keys) = ingress_leg();
        let counters = crate::media::MediaCounters::default();
        let mid_id = leg.ingress.as_ref().unwrap().ids.mid.unwrap();
        let pt = *leg.rtc.codec_config().params()[0].pt();
        let mut buf = sealed(&peer, 0x4444, pt, 1, Some((mid_id, mid.as_ref())), b"x");
        let o = leg.own_srtp().unwrap().rx.unprotect_rtp(&mut buf).unwrap();
        buf.truncate(o.len);
        let now = Instant::now();
        assert!(leg
            .place_inbound(&buf, o.index, Arrival::read(now), now)
            .is_ok());
        leg.request_keyframe(
            KeyframeOf::Ssrc(0x4444),
            KeyframeRequestKind::Pli,
            &counters,
        );
        leg.request_keyframe(
            KeyframeOf::Ssrc(0x9999),
            KeyframeRequestKind::Pli,
            &counters,
        );
        leg.request_keyframe(
            KeyframeOf::Ssrc(0x4444),
            KeyframeRequestKind::Fir,
            &counters,
        );
        assert_eq!(
            counters.plis_sent.load(Relaxed),
            1,
            "a PLI, not an unknown stream's"
        );
        // str0m's cumulative count, should it report one after a hand-back, adds only what is
        // new.
        let key = (mid, None, false);
        assert_eq!(leg.rtcp_seen.get(&key), Some(&(0, 1)));
        leg.stop_ingress();
        leg.request_keyframe(
            KeyframeOf::Ssrc(0x4444),
            KeyframeRequestKind::Pli,
            &counters,
        );
        assert_eq!(counters.plis_sent.load(Relaxed), 1, "str0m's to count now");
    }

    #[test]
    fn a_str0m_stream_on_our_feedback_ssrc_hands_the_leg_to_str0m() {
        let (mut leg, mid, _peer, _keys) = ingress_leg();
        leg.refresh_ingress();
        assert!(leg.ingress.is_some(), "nothing taken: still fast");
        let own = leg.ingress.as_ref().unwrap().core.own_ssrc;
        leg.rtc
            .direct_api()
            .declare_stream_tx(Ssrc::from(own), None, mid, None);
        leg.refresh_ingress();
        assert!(leg.ingress.is_none() && leg.ingress_off);
    }

    #[test]
    fn a_rekey_or_a_second_start_hands_the_leg_to_str0m() {
        let (mut leg, mid, peer, keys) = ingress_leg();
        assert!(leg.start_ingress(Instant::now()), "started stays started");
        // A stream past its first wrap (ROC 1).
        let mid_id = leg.ingress.as_ref().unwrap().ids.mid.unwrap();
        let pt = *leg.rtc.codec_config().params()[0].pt();
        let ssrc = 0x4444;
        leg.own_srtp()
            .unwrap()
            .rx
            .seed_rtp_index(ssrc, 0x1_0000)
            .unwrap();
        let mut buf = sealed(
            &peer,
            ssrc,
            pt,
            0x1_0005,
            Some((mid_id, mid.as_ref())),
            b"x",
        );
        let o = leg.own_srtp().unwrap().rx.unprotect_rtp(&mut buf).unwrap();
        buf.truncate(o.len);
        assert!(leg
            .place_inbound(&buf, o.index, Arrival::read(Instant::now()), Instant::now())
            .is_ok());
        keys.put(&[6u8; 88], SrtpProfile::AEAD_AES_256_GCM, false);
        // Our context is replaced by the new keys' (empty) one first, as any packet forwarded
        // into the leg would do (review #3): the ROC handed to str0m is still the stream's.
        assert!(leg.own_srtp().unwrap().rx.rtp_highest_index(ssrc).is_none());
        let highest: Vec<_> = leg
            .ingress
            .as_ref()
            .unwrap()
            .core
            .highest_indices()
            .collect();
        assert_eq!(highest, vec![(ssrc, false, 0x1_0005)]);
        leg.stop_ingress();
        assert!(leg.ingress.is_none());
        assert!(
            !leg.start_ingress(Instant::now()),
            "never again on this leg"
        );
        // The new keys' context is seeded with the stream's state, and str0m gets the ROC
        // only with a packet it authenticates (review #3c): a forgery, or a replay of what
        // came before, is dropped and leaves the hand-over pending.
        assert_eq!(leg.roc_pending, vec![ssrc]);
        assert_eq!(
            leg.own_srtp().unwrap().rx.rtp_highest_index(ssrc),
            Some(0x1_0005)
        );
        use crate::media::srtp::SrtpProfile as Ours;
        let new_tx = LegSrtp::from_keying_material(Ours::AeadAes256Gcm, &[6u8; 88], true)
            .unwrap()
            .tx;
        let m = Some((mid_id, mid.as_ref()));
        let mut forged = sealed(&new_tx, ssrc, pt, 0x1_0006, m, b"y");
        let last = forged.len() - 1;
        forged[last] ^= 1;
        assert_eq!(leg.roc_for_str0m(&forged), (false, false));
        let old = sealed(&new_tx, ssrc, pt, 0x1_0005, m, b"x");
        assert_eq!(leg.roc_for_str0m(&old), (false, false));
        assert_eq!(leg.roc_pending, vec![ssrc]);
        // Another SSRC's packets pass unopened.
        assert_eq!(
            leg.roc_for_str0m(&sealed(&new_tx, 0x5555, pt, 1, m, b"z")),
            (true, false)
        );
        // The next genuine packet: str0m is given its ROC (that packet's, so a first packet
        // across a wrap gets the new one), once.
        let next = sealed(&new_tx, ssrc, pt, 0x1_0006, m, b"y");
        assert_eq!(leg.roc_for_str0m(&next), (true, true));
        assert!(leg.roc_pending.is_empty());
        assert_eq!(leg.roc_for_str0m(&next), (true, false), "once only");
    }

    #[test]
    fn feedback_follows_the_media_source_before_str0ms_send_address() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        assert_eq!(
            feedback_destination(Some(a), Some(b)),
            Some(b),
            "review #11"
        );
        assert_eq!(feedback_destination(Some(a), None), Some(a));
        assert_eq!(feedback_destination(None, None), None);
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
