//! The media engine: the host's WebRTC endpoint (ICE-lite, DTLS-SRTP, RTP/RTCP with BUNDLE and
//! rtcp-mux), built on str0m, exposed to plugins through the ABI's `media_*` calls.
//!
//! # Shape
//!
//! * [`sdp`] is the sans-IO session layer: an offer in, an answer out, refusals mapped to SIP
//!   statuses. Unit-tested without sockets.
//! * [`rtp`] holds the byte-level helpers: the plain RTP that crosses the plugin boundary, the
//!   sequence-number extension and the rewriting of the forwarding fast path, RTCP key-frame
//!   requests.
//! * [`driver`] is the one tokio task (on a thread of its own, `huddle-media`) that owns the
//!   UDP socket and every leg's `Rtc`: it `select!`s on the socket, the earliest leg deadline
//!   and a bounded command channel, feeds datagrams to the leg they belong to, and drains each
//!   touched leg's `poll_output` until it says `Timeout`. One socket serves every leg (the
//!   port in `[media] listen`); [`udp`] reads it with `recvmmsg` and writes each turn's
//!   datagrams with `sendmmsg`.
//! * [`MediaEngine`] is the handle plugins' host functions use. It is `Clone` and thread-safe;
//!   its calls never wait for the driver except [`MediaEngine::answer`] on a renegotiation
//!   (the leg's `Rtc` lives in the driver), which waits a bounded time.
//!
//! # Demultiplexing
//!
//! A STUN binding request names our ICE username fragment (`USERNAME = ours:theirs`), which
//! identifies the leg; its source address is then bound to that leg. Everything else (DTLS,
//! SRTP, SRTCP) is routed by source address. Datagrams from unknown addresses are dropped.
//!
//! # Lifecycle of a leg
//!
//! `answer` creates it (str0m `Rtc`, our one host candidate); the peer's ICE checks and DTLS
//! handshake connect it (`media_ready`). A leg not connected within `connect_timeout_secs` is
//! torn down and its plugin gets `media_hangup(TRANSPORT)`: the plugin then ends the dialog
//! (BYE). A connected leg from which nothing arrives for `idle_timeout_secs` (browsers send
//! ICE consent checks every few seconds, even on hold) goes the same way, as does one whose
//! ICE agent reports the connection lost. `close` (a BYE) ends it with `NORMAL`.
//! Following str0m's rule, a leg whose `Rtc` is no longer alive is never driven again.
//!
//! # Taps
//!
//! [`MediaEngine::tap`] lets a plugin receive another leg's incoming RTP (any plugin's leg: the
//! conference mixer taps the screen-share relay's presenter). Each packet of the tapped stream
//! then also goes to the tapper's `rtp` event, under the tapped session's id, whether the
//! stream is forwarded or handed to its own plugin; the tapper may ask that leg for key frames.
//! A tap ends with `tap(.., false)` or when the tapped leg ends (the tapper is not told: it
//! learns that from the owner's shared state, as it learnt of the stream).

pub mod driver;
#[cfg(test)]
mod fastegress_tests;
#[cfg(test)]
mod forward_tests;
mod ingress;
#[cfg(test)]
mod ingress_tests;
pub mod keytap;
#[cfg(test)]
mod keytap_tests;
#[cfg(test)]
mod lifecycle_tests;
mod repair;
pub mod rtp;
pub mod sdp;
pub mod srtp;
mod udp;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once, PoisonError};
use std::time::{Duration, Instant};

use huddle_sdk::HangupReason;
use str0m::media::Mid;
use tokio::sync::mpsc;

pub use sdp::{CodecName, LegSettings, SdpError};

/// Commands queued towards the driver before callers get [`MediaError::Busy`].
const COMMAND_QUEUE: usize = 16_384;
/// How long `answer` waits for the driver on a renegotiation.
const ANSWER_WAIT: Duration = Duration::from_secs(5);

/// Installs the process's crypto provider, once: str0m's aws-lc-rs one with each leg's DTLS
/// keys tapped ([`keytap`]).
pub fn install_crypto() {
    static ONCE: Once = Once::new();
    ONCE.call_once(keytap::install);
}

/// What a plugin's media calls can fail with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MediaError {
    /// No such session (or not this plugin's), or no such stream in it.
    #[error("no such media session or stream")]
    NotFound,
    /// The driver's queue is full.
    #[error("the media engine is busy")]
    Busy,
    /// The engine has stopped.
    #[error("the media engine has stopped")]
    Stopped,
    /// Bytes that are not an RTP packet.
    #[error("not an RTP packet")]
    BadPacket,
    /// The offer was refused.
    #[error(transparent)]
    Sdp(#[from] SdpError),
}

/// Where a leg's events go: the plugin that answered it. Implementations queue and return at
/// once (they run on the driver's thread, `huddle-media`).
pub trait MediaEvents: Send + Sync + 'static {
    /// ICE and DTLS are up.
    fn ready(&self, session: u64);
    /// One plain RTP packet received on stream `mid`.
    fn rtp(&self, session: u64, mid: &str, packet: Vec<u8>);
    /// One RTCP packet for the plugin (key-frame requests for what it sends).
    fn rtcp(&self, session: u64, packet: Vec<u8>);
    /// The leg ended.
    fn hangup(&self, session: u64, reason: HangupReason);
    /// A new estimate of the bandwidth towards the peer (TWCC or REMB), bits per second.
    fn bitrate(&self, session: u64, bps: u64);
}

/// `[media]` as the engine needs it.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// The UDP socket every leg uses.
    pub listen: SocketAddr,
    /// The address put in candidates (NAT 1:1); default: the listen address.
    pub advertise: Option<IpAddr>,
    /// Legs not connected (ICE + DTLS) this long after the answer are torn down.
    pub connect_timeout: Duration,
    /// Connected legs silent this long (no ICE consent check, no media) are torn down.
    pub idle_timeout: Duration,
    /// Legs at most; more answers get 503.
    pub max_sessions: usize,
    /// Codecs answered with.
    pub codecs: Vec<CodecName>,
    /// Send-side bandwidth estimation (TWCC) with pacing.
    pub bandwidth_estimation: bool,
    /// Forwarded streams of legs without bandwidth estimation are sealed and sent by the
    /// driver itself, outside str0m, with its own loss repair (bench/NOTES.md, "Media fast
    /// path, step 2").
    pub fast_egress: bool,
    /// Inbound RTP of legs without bandwidth estimation is opened by the driver itself and
    /// handed to forwarding and plugins without str0m, which also sends the feedback about it
    /// (transport-wide congestion control, NACK, receiver reports) (bench/NOTES.md, "Media fast
    /// path, step 3").
    pub fast_ingress: bool,
    /// A flush's datagrams to one destination of equal size go as one UDP GSO send
    /// (`UDP_SEGMENT`, Linux) where the kernel has it (bench/NOTES.md, "Media host I/O: UDP GSO
    /// on egress").
    pub udp_gso: bool,
    /// The socket's receive buffer, bytes; 0 leaves the kernel's default.
    pub udp_recv_buffer: usize,
}

/// Asks for a receive buffer of `bytes` on `socket` (0: leaves the kernel's default) and
/// returns what the kernel reports it gave (Linux doubles the request, for its bookkeeping,
/// after capping it at `net.core.rmem_max`: [`granted_request`] undoes that).
fn set_recv_buffer(socket: impl std::os::fd::AsFd, bytes: usize) -> std::io::Result<usize> {
    let socket = socket2::SockRef::from(&socket);
    if bytes > 0 {
        socket.set_recv_buffer_size(bytes)?;
    }
    socket.recv_buffer_size()
}

/// The request a reported receive buffer size stands for: Linux reports twice what it took.
fn granted_request(reported: usize) -> usize {
    if cfg!(target_os = "linux") {
        reported / 2
    } else {
        reported
    }
}

/// What the registry knows of a leg, for synchronous checks in the callers' threads.
#[derive(Debug)]
struct Entry {
    owner: usize,
    mids: Vec<Mid>,
    /// (plugin, stream) taps: those plugins may ask it for key frames too.
    tappers: Vec<(usize, Mid)>,
}

/// A command for the driver.
pub(crate) enum Command {
    /// A new leg, answered already.
    Insert(Box<driver::Leg>),
    /// A renegotiation of an existing leg.
    Renegotiate {
        session: u64,
        offer: Box<str0m::change::SdpOffer>,
        reply: std::sync::mpsc::SyncSender<Result<String, SdpError>>,
    },
    /// One packet from a plugin.
    SendRtp {
        session: u64,
        mid: Mid,
        packet: Vec<u8>,
    },
    /// Packets from a plugin sent in one go (ABI 1.7 `media_send_rtp_batch`): each as
    /// `SendRtp`, checked already; `packets` holds them back to back, `ends` where each ends.
    SendRtpBatch {
        targets: Vec<(u64, Mid)>,
        packets: Vec<u8>,
        ends: Vec<usize>,
    },
    /// Key-frame requests from a plugin's RTCP, by media SSRC.
    Keyframe {
        session: u64,
        mid: Option<Mid>,
        ssrcs: Vec<u32>,
    },
    /// Start (`src: Some`) or stop forwarding into `dst`/`dst_mid`.
    Forward {
        src: Option<(u64, Mid)>,
        dst: u64,
        dst_mid: Mid,
    },
    /// Start (`tapper: Some`) or stop (`None`) delivering `session`'s incoming `mid` to plugin
    /// `owner`'s events as well.
    Tap {
        session: u64,
        mid: Mid,
        owner: usize,
        tapper: Option<Arc<dyn MediaEvents>>,
    },
    /// Close a leg.
    Close { session: u64 },
    /// Stop the engine.
    Shutdown,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            Command::Insert(_) => "Insert",
            Command::Renegotiate { .. } => "Renegotiate",
            Command::SendRtp { .. } => "SendRtp",
            Command::SendRtpBatch { .. } => "SendRtpBatch",
            Command::Keyframe { .. } => "Keyframe",
            Command::Forward { .. } => "Forward",
            Command::Tap { .. } => "Tap",
            Command::Close { .. } => "Close",
            Command::Shutdown => "Shutdown",
        };
        f.write_str(name)
    }
}

#[derive(Debug)]
struct Shared {
    commands: mpsc::Sender<Command>,
    leg: LegSettings,
    connect_timeout: Duration,
    idle_timeout: Duration,
    max_sessions: usize,
    registry: Mutex<HashMap<u64, Entry>>,
    next_id: AtomicU64,
    local: SocketAddr,
    counters: MediaCounters,
    /// [`EngineSettings::fast_egress`], for legs without bandwidth estimation.
    fast_egress: bool,
    /// [`EngineSettings::fast_ingress`], for legs without bandwidth estimation.
    fast_ingress: bool,
}

/// What the driver counts for `/metrics`; read at scrape time.
#[derive(Debug, Default)]
pub(crate) struct MediaCounters {
    packets_in: AtomicU64,
    packets_out: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    nacks_sent: AtomicU64,
    nacks_received: AtomicU64,
    plis_sent: AtomicU64,
    plis_received: AtomicU64,
    /// Legs connected, by the SRTP profile our own contexts were built for
    /// ([`SrtpVerify::legs`]).
    srtp_legs: [AtomicU64; 4],
    /// Debug builds: inbound SRTP, SRTCP seen with our contexts up, and how many of each they
    /// opened.
    srtp_verify: [AtomicU64; 4],
    /// Fast egress: packets sealed by the driver, forwarded packets written through str0m on
    /// fast legs (its sender reports' anchor), repairs sent, debug drops, packets not written
    /// for their index ([`FastEgress`]).
    fast: [AtomicU64; 5],
    /// Fast ingress ([`FastIngress`], in its field order).
    ingress: [AtomicU64; 10],
    /// UDP segmentation offload ([`UdpGso`], in its field order).
    gso: [AtomicU64; 3],
    /// Debug builds: the fast egress drops every n-th packet it seals (0: none), so that tests
    /// see its loss repair at work.
    #[cfg(debug_assertions)]
    drop_every: AtomicU64,
}

/// What UDP segmentation offload on the media socket did since start (read in tests and
/// benchmarks; `[media] udp_gso`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct UdpGso {
    /// GSO sends: each carried several datagrams to one peer in one system call.
    pub sends: u64,
    /// Datagrams those carried.
    pub datagrams: u64,
    /// GSO sends the kernel refused as impossible on their route (the first one ever turns
    /// offload off; later ones turn it off for that peer), sent again one datagram at a time.
    pub fallbacks: u64,
}

/// What the fast egress did since start (read in tests and benchmarks).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FastEgress {
    /// Packets the driver sealed and sent itself.
    pub sealed: u64,
    /// Forwarded packets of fast legs written through str0m (about one a second per stream,
    /// so that str0m's sender reports carry the stream's clock; and every packet of a leg
    /// whose keys are not there).
    pub through_str0m: u64,
    /// RTX packets or retransmissions sent for receivers' NACKs.
    pub repaired: u64,
    /// Debug builds: packets left out on purpose ([`MediaEngine::drop_fast_egress_every`]).
    pub dropped: u64,
    /// Packets not written, on any leg, because their index was used already or has no place
    /// in the output stream (a late packet from before its source's first since a switch):
    /// sealing them would reuse an SRTP nonce.
    pub refused: u64,
}

/// What the fast ingress did since start (read in tests and benchmarks).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FastIngress {
    /// Legs whose inbound RTP the driver opened itself.
    pub legs: u64,
    /// Inbound RTP packets it opened (authenticated, not replayed).
    pub opened: u64,
    /// Dropped: the tag did not verify.
    pub auth_failed: u64,
    /// Dropped: replayed, or older than the replay window.
    pub replayed: u64,
    /// Dropped after opening, as it could not place them: an unknown payload type or MID, a
    /// RID, no room for a new stream, an RTX packet whose OSN no hole could have asked for.
    pub unhandled: u64,
    /// RTX packets whose original packet was missing, forwarded in its place.
    pub repaired: u64,
    /// RTCP packets it sent (transport feedback, NACK, receiver reports).
    pub feedback: u64,
    /// Of those, transport-wide congestion control feedback.
    pub twcc: u64,
    /// Dropped after opening as senders send them anyway: RTX padding and probes, repairs of
    /// packets received, an original after its repair.
    pub ignored: u64,
    /// Opened packets whose arrival time was the kernel's receive timestamp (the rest: the
    /// time the driver read them).
    pub stamped: u64,
}

/// What the engine's own SRTP contexts did next to str0m's: read in tests (debug builds check
/// every inbound packet with them; release builds only count the legs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SrtpVerify {
    /// Legs connected, by profile: AES-128-CM-SHA1-80, AEAD-AES-128-GCM, AEAD-AES-256-GCM,
    /// none (keys missing or a profile we do not implement).
    pub legs: [u64; 4],
    /// Inbound SRTP packets seen once our contexts were up (debug builds).
    pub rtp: u64,
    /// Of those, how many our receive context opened.
    pub rtp_opened: u64,
    /// Inbound SRTCP packets seen once our contexts were up (debug builds).
    pub rtcp: u64,
    /// Of those, how many our receive context opened.
    pub rtcp_opened: u64,
}

impl MediaCounters {
    /// A datagram of `n` bytes went out.
    pub(crate) fn sent(&self, n: usize) {
        self.packets_out.fetch_add(1, Ordering::Relaxed);
        self.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// A datagram of `n` bytes came in.
    pub(crate) fn received(&self, n: usize) {
        self.packets_in.fetch_add(1, Ordering::Relaxed);
        self.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// A leg connected with our SRTP contexts for `profile` (or none).
    pub(crate) fn srtp_profile(&self, profile: Option<srtp::SrtpProfile>) {
        let i = match profile {
            Some(srtp::SrtpProfile::Aes128CmSha1_80) => 0,
            Some(srtp::SrtpProfile::AeadAes128Gcm) => 1,
            Some(srtp::SrtpProfile::AeadAes256Gcm) => 2,
            None => 3,
        };
        self.srtp_legs[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Debug builds: an inbound SRTP (`rtcp`: SRTCP) packet checked with our own context.
    #[cfg(debug_assertions)]
    pub(crate) fn srtp_verified(&self, rtcp: bool, opened: bool) {
        let i = if rtcp { 2 } else { 0 };
        self.srtp_verify[i].fetch_add(1, Ordering::Relaxed);
        if opened {
            self.srtp_verify[i + 1].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Fast egress: one packet sealed (`0`), written through str0m (`1`), repaired (`2`) or
    /// dropped on purpose (`3`, debug builds).
    pub(crate) fn fast(&self, what: usize) {
        if let Some(c) = self.fast.get(what) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// What the outbox's segmentation offload did since it was last asked.
    pub(crate) fn gso(&self, counts: udp::GsoCounts) {
        self.gso[0].fetch_add(counts.sends, Ordering::Relaxed);
        self.gso[1].fetch_add(counts.datagrams, Ordering::Relaxed);
        self.gso[2].fetch_add(counts.fallbacks, Ordering::Relaxed);
    }

    /// Fast ingress: one event of [`FastIngress`]'s field `what` (in field order).
    pub(crate) fn ingress(&self, what: usize, n: u64) {
        if let Some(c) = self.ingress.get(what) {
            c.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Debug builds: the n-th packets to drop (0: none).
    #[cfg(debug_assertions)]
    pub(crate) fn drop_every(&self) -> u64 {
        self.drop_every.load(Ordering::Relaxed)
    }

    /// New NACKs and PLIs: received from the peer (`egress`: about what we send) or sent.
    pub(crate) fn rtcp(&self, egress: bool, nacks: u64, plis: u64) {
        let (n, p) = if egress {
            (&self.nacks_received, &self.plis_received)
        } else {
            (&self.nacks_sent, &self.plis_sent)
        };
        n.fetch_add(nacks, Ordering::Relaxed);
        p.fetch_add(plis, Ordering::Relaxed);
    }
}

/// The handle on the running engine. Cheap to clone.
#[derive(Debug, Clone)]
pub struct MediaEngine {
    shared: Arc<Shared>,
}

/// The engine's thread (`huddle-media`), to hand to [`MediaEngine::shutdown`]. Its owner
/// dropping it without that stops the driver too (its legs hung up with `SHUTDOWN`, its socket
/// closed), so that an error path or a failed test leaves no thread behind; only `shutdown`
/// waits for the thread to end.
#[derive(Debug)]
pub struct EngineTask {
    thread: std::thread::JoinHandle<()>,
    /// Dropped with the task: the driver stops when this closes.
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl MediaEngine {
    /// Binds the socket and starts the driver on its own thread (`huddle-media`); returns once
    /// the driver runs, or with what kept it from running.
    pub async fn start(settings: EngineSettings) -> std::io::Result<(MediaEngine, EngineTask)> {
        install_crypto();
        let socket = tokio::net::UdpSocket::bind(settings.listen).await?;
        // The driver drains the socket once per turn: at hundreds of legs the default buffer
        // holds about a millisecond of input, and any longer wait for the CPU drops datagrams.
        let asked = settings.udp_recv_buffer;
        match set_recv_buffer(&socket, asked) {
            Ok(got) if granted_request(got) < asked => tracing::warn!(
                asked,
                got,
                "the media socket's receive buffer is smaller than [media] udp_recv_buffer: \
                 net.core.rmem_max caps it (raise that sysctl)"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(asked, "the media socket's receive buffer: {e}"),
        }
        let local = socket.local_addr()?;
        let ip = settings.advertise.unwrap_or(local.ip());
        let candidate = SocketAddr::new(ip, local.port());
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        let shared = Arc::new(Shared {
            commands: tx,
            leg: LegSettings {
                candidate,
                codecs: settings.codecs,
                bandwidth_estimation: settings.bandwidth_estimation,
            },
            fast_egress: settings.fast_egress,
            fast_ingress: settings.fast_ingress,
            connect_timeout: settings.connect_timeout,
            idle_timeout: settings.idle_timeout,
            max_sessions: settings.max_sessions,
            registry: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            local,
            counters: MediaCounters::default(),
        });
        let engine = MediaEngine {
            shared: shared.clone(),
        };
        #[cfg(debug_assertions)]
        if let Some(n) = std::env::var("HUDDLE_DEBUG_FAST_EGRESS_DROP")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            engine.drop_fast_egress_every(n);
        }
        // Only the fast ingress reads the stamps (its transport feedback); it runs on legs
        // without bandwidth estimation.
        let stamped = settings.fast_ingress
            && !settings.bandwidth_estimation
            && udp::enable_receive_timestamps(&socket);
        let gso = settings.udp_gso && udp::probe_gso(&socket);
        // The driver runs on a thread of its own, in a current-thread runtime: it sleeps and
        // wakes on that one thread. As a task of the shared runtime it was woken on whichever
        // worker found the socket ready or took a command's wake-up, and the workers woke each
        // other for it (futex calls, context switches: bench/NOTES.md, "Media driver wake-ups").
        // The runtime is built, and the socket registered with its reactor, on that thread,
        // which reports how that went before `start` returns (as the `huddle-sip` thread does):
        // every failure reaches the caller, and no runtime is ever dropped in this async
        // context (tokio panics on that).
        let socket = socket.into_std()?;
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<std::io::Result<()>>();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let driven = engine.clone();
        let thread = std::thread::Builder::new()
            .name("huddle-media".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let ended = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    runtime.block_on(async move {
                        match tokio::net::UdpSocket::from_std(socket) {
                            Ok(socket) => {
                                let _ = ready_tx.send(Ok(()));
                                driver::run(socket, candidate, rx, stop_rx, driven, stamped, gso)
                                    .await;
                            }
                            Err(e) => {
                                let _ = ready_tx.send(Err(e));
                            }
                        }
                    });
                }));
                if let Err(panic) = ended {
                    // The driver's state unwound with it: the socket is closed and the legs
                    // dropped, but no plugin heard `hangup` and the registry still lists them.
                    tracing::error!(
                        panic = panic_message(&*panic),
                        "the media driver panicked: media stopped, its legs were not hung up"
                    );
                    // Carried to whoever joins the thread (`MediaEngine::shutdown`).
                    std::panic::resume_unwind(panic);
                }
            })?;
        let started = match ready_rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(std::io::Error::other(
                "the media thread ended during start-up",
            )),
        };
        if let Err(e) = started {
            // The thread has returned (or is returning): nothing runs on it.
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
            return Err(e);
        }
        tracing::info!(%local, %candidate, "media engine listening");
        Ok((
            engine,
            EngineTask {
                thread,
                _stop: stop_tx,
            },
        ))
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local
    }

    pub(crate) fn counters(&self) -> &MediaCounters {
        &self.shared.counters
    }

    /// Totals since start, for `/metrics`.
    pub fn totals(&self) -> crate::metrics::MediaTotals {
        let c = &self.shared.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let gso = self.udp_gso();
        crate::metrics::MediaTotals {
            packets_in: l(&c.packets_in),
            packets_out: l(&c.packets_out),
            bytes_in: l(&c.bytes_in),
            bytes_out: l(&c.bytes_out),
            nacks_sent: l(&c.nacks_sent),
            nacks_received: l(&c.nacks_received),
            plis_sent: l(&c.plis_sent),
            plis_received: l(&c.plis_received),
            gso_sends: gso.sends,
            gso_datagrams: gso.datagrams,
            gso_fallbacks: gso.fallbacks,
        }
    }

    /// What our own SRTP contexts did since start ([`SrtpVerify`]).
    pub fn srtp_verify(&self) -> SrtpVerify {
        let c = &self.shared.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let v = &c.srtp_verify;
        SrtpVerify {
            legs: [0, 1, 2, 3].map(|i| l(&c.srtp_legs[i])),
            rtp: l(&v[0]),
            rtp_opened: l(&v[1]),
            rtcp: l(&v[2]),
            rtcp_opened: l(&v[3]),
        }
    }

    /// What UDP segmentation offload did since start ([`UdpGso`]).
    pub fn udp_gso(&self) -> UdpGso {
        let c = &self.shared.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        UdpGso {
            sends: l(&c.gso[0]),
            datagrams: l(&c.gso[1]),
            fallbacks: l(&c.gso[2]),
        }
    }

    /// What the fast egress did since start ([`FastEgress`]).
    pub fn fast_egress(&self) -> FastEgress {
        let c = &self.shared.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        FastEgress {
            sealed: l(&c.fast[0]),
            through_str0m: l(&c.fast[1]),
            repaired: l(&c.fast[2]),
            dropped: l(&c.fast[3]),
            refused: l(&c.fast[4]),
        }
    }

    /// What the fast ingress did since start ([`FastIngress`]).
    pub fn fast_ingress(&self) -> FastIngress {
        let c = &self.shared.counters.ingress;
        let l = |i: usize| c[i].load(Ordering::Relaxed);
        FastIngress {
            legs: l(0),
            opened: l(1),
            auth_failed: l(2),
            replayed: l(3),
            unhandled: l(4),
            repaired: l(5),
            feedback: l(6),
            twcc: l(7),
            ignored: l(8),
            stamped: l(9),
        }
    }

    /// Debug builds: the fast egress leaves out every `n`-th packet it seals (0: none), as a
    /// lossy network would, keeping it for repair. Also set at start from the environment
    /// variable `HUDDLE_DEBUG_FAST_EGRESS_DROP` (for tests that run the whole server).
    #[cfg(debug_assertions)]
    pub fn drop_fast_egress_every(&self, n: u64) {
        self.shared.counters.drop_every.store(n, Ordering::Relaxed);
    }

    /// Legs alive.
    pub fn sessions(&self) -> usize {
        self.registry().len()
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Entry>> {
        // Only map bookkeeping happens under this lock.
        self.shared
            .registry
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn send(&self, command: Command) -> Result<(), MediaError> {
        self.shared.commands.try_send(command).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => MediaError::Busy,
            mpsc::error::TrySendError::Closed(_) => MediaError::Stopped,
        })
    }

    /// The stream `mid` of a leg `owner` answered.
    fn check(&self, owner: usize, session: u64, mid: Option<&str>) -> Result<Mid, MediaError> {
        self.check_with(session, mid, |e| e.owner == owner)
    }

    /// The stream `mid` of a leg whose entry passes `allowed`.
    fn check_with(
        &self,
        session: u64,
        mid: Option<&str>,
        allowed: impl Fn(&Entry) -> bool,
    ) -> Result<Mid, MediaError> {
        let registry = self.registry();
        let entry = registry
            .get(&session)
            .filter(|e| allowed(e))
            .ok_or(MediaError::NotFound)?;
        match mid {
            None => Ok(Mid::default()),
            Some(mid) => entry
                .mids
                .iter()
                .find(|m| &***m == mid)
                .copied()
                .ok_or(MediaError::NotFound),
        }
    }

    /// Answers an offer for plugin `owner`: a new leg (`session: None`) or a renegotiation.
    /// Blocks briefly on a renegotiation; call it from a plugin thread, not the runtime.
    pub fn answer(
        &self,
        owner: usize,
        events: Arc<dyn MediaEvents>,
        session: Option<u64>,
        offer: &[u8],
    ) -> Result<(u64, String), MediaError> {
        let offer = sdp::check_offer(offer)?;
        if let Some(session) = session {
            self.check(owner, session, None)?;
            let (reply, answer) = std::sync::mpsc::sync_channel(1);
            self.send(Command::Renegotiate {
                session,
                offer: Box::new(offer),
                reply,
            })?;
            let text = answer
                .recv_timeout(ANSWER_WAIT)
                .map_err(|_| MediaError::NotFound)??;
            self.set_mids(session, &text);
            return Ok((session, text));
        }
        if self.registry().len() >= self.shared.max_sessions {
            return Err(SdpError::TooManySessions.into());
        }
        let now = Instant::now();
        let (mut rtc, ufrag, keys) = sdp::new_leg(&self.shared.leg, now);
        let text = sdp::answer(&mut rtc, offer)?;
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        self.registry().insert(
            id,
            Entry {
                owner,
                mids: mids_of(&text),
                tappers: Vec::new(),
            },
        );
        let mut leg = driver::Leg::new(
            id,
            rtc,
            ufrag,
            keys,
            events,
            now,
            self.shared.connect_timeout,
            self.shared.idle_timeout,
        );
        leg = leg.with_mids(mids_of(&text));
        if self.shared.leg.bandwidth_estimation {
            leg = leg.without_timer_slack();
        } else {
            if self.shared.fast_egress {
                leg = leg.with_fast_egress();
            }
            if self.shared.fast_ingress {
                leg = leg.with_fast_ingress();
            }
        }
        if let Err(e) = self.send(Command::Insert(Box::new(leg))) {
            self.registry().remove(&id);
            return Err(e);
        }
        Ok((id, text))
    }

    fn set_mids(&self, session: u64, answer: &str) {
        if let Some(entry) = self.registry().get_mut(&session) {
            entry.mids = mids_of(answer);
        }
    }

    /// Forgets a leg the driver removed.
    pub(crate) fn forget(&self, session: u64) {
        self.registry().remove(&session);
    }

    /// Sends a plain RTP packet on stream `mid` (the host encrypts it and gives it the
    /// stream's SSRC).
    pub fn send_rtp(
        &self,
        owner: usize,
        session: u64,
        mid: &str,
        packet: &[u8],
    ) -> Result<(), MediaError> {
        let mid = self.check(owner, session, Some(mid))?;
        rtp::parse(packet).ok_or(MediaError::BadPacket)?;
        self.send(Command::SendRtp {
            session,
            mid,
            packet: packet.to_vec(),
        })
    }

    /// Sends plain RTP packets `(session, mid, packet)`, each as [`MediaEngine::send_rtp`]
    /// would, in one command (one crossing into the driver, where `send_rtp` costs one per
    /// packet). Entries that fail their check are skipped and the first failure returned;
    /// [`MediaError::Busy`] (or `Stopped`) when none was sent.
    pub fn send_rtp_batch(
        &self,
        owner: usize,
        packets: &[(u64, &str, &[u8])],
    ) -> Result<(), MediaError> {
        let mut first = Ok(());
        let mut targets = Vec::with_capacity(packets.len());
        let mut bytes = Vec::with_capacity(packets.iter().map(|p| p.2.len()).sum());
        let mut ends = Vec::with_capacity(packets.len());
        {
            let registry = self.registry();
            for &(session, mid, packet) in packets {
                let checked = registry
                    .get(&session)
                    .filter(|e| e.owner == owner)
                    .and_then(|e| e.mids.iter().find(|m| &***m == mid).copied())
                    .ok_or(MediaError::NotFound)
                    .and_then(|mid| match rtp::parse(packet) {
                        Some(_) => Ok(mid),
                        None => Err(MediaError::BadPacket),
                    });
                match checked {
                    Ok(mid) => {
                        targets.push((session, mid));
                        bytes.extend_from_slice(packet);
                        ends.push(bytes.len());
                    }
                    Err(e) => {
                        if first.is_ok() {
                            first = Err(e);
                        }
                    }
                }
            }
        }
        if !targets.is_empty() {
            self.send(Command::SendRtpBatch {
                targets,
                packets: bytes,
                ends,
            })?;
        }
        first
    }

    /// RTCP from a plugin: the key-frame requests in it (PLI, FIR) go to the senders of the
    /// streams they name. The host makes every other report itself (SR/RR, NACK, TWCC).
    pub fn send_rtcp(&self, owner: usize, session: u64, packet: &[u8]) -> Result<(), MediaError> {
        self.check(owner, session, None)?;
        let ssrcs = rtp::keyframe_requests(packet);
        if ssrcs.is_empty() {
            return Ok(());
        }
        self.send(Command::Keyframe {
            session,
            mid: None,
            ssrcs,
        })
    }

    /// Asks the sender of stream `mid` for a key frame: of a leg `owner` answered or taps.
    pub fn request_keyframe(
        &self,
        owner: usize,
        session: u64,
        mid: &str,
    ) -> Result<(), MediaError> {
        let mid = self.check_with(session, Some(mid), |e| {
            e.owner == owner || e.tappers.iter().any(|(t, _)| *t == owner)
        })?;
        self.send(Command::Keyframe {
            session,
            mid: Some(mid),
            ssrcs: Vec::new(),
        })
    }

    /// Forwards stream `src_mid` of `src` into `dst_mid` of `dst` (`src_mid` empty: stop).
    pub fn forward(
        &self,
        owner: usize,
        src: u64,
        src_mid: &str,
        dst: u64,
        dst_mid: &str,
    ) -> Result<(), MediaError> {
        let dst_mid = self.check(owner, dst, Some(dst_mid))?;
        let src = if src_mid.is_empty() {
            None
        } else {
            Some((src, self.check(owner, src, Some(src_mid))?))
        };
        self.send(Command::Forward { src, dst, dst_mid })
    }

    /// Starts (`on`) or stops delivering the incoming stream `mid` of `session` (any plugin's
    /// leg) to plugin `owner`'s `events` too, under `session`'s id (module docs, "Taps").
    /// [`MediaError::NotFound`] when the leg or stream does not exist (or is gone), or, to
    /// stop, when `owner` does not tap that leg.
    pub fn tap(
        &self,
        owner: usize,
        events: Arc<dyn MediaEvents>,
        session: u64,
        mid: &str,
        on: bool,
    ) -> Result<(), MediaError> {
        let mid = {
            let mut registry = self.registry();
            let entry = registry.get_mut(&session).ok_or(MediaError::NotFound)?;
            let mid = entry
                .mids
                .iter()
                .find(|m| &***m == mid)
                .copied()
                .ok_or(MediaError::NotFound)?;
            let at = entry.tappers.iter().position(|t| *t == (owner, mid));
            match (on, at) {
                (true, None) => entry.tappers.push((owner, mid)),
                (true, Some(_)) => {}
                (false, Some(at)) => {
                    entry.tappers.swap_remove(at);
                }
                (false, None) => return Err(MediaError::NotFound),
            }
            mid
        };
        self.send(Command::Tap {
            session,
            mid,
            owner,
            tapper: on.then_some(events),
        })
    }

    /// Closes a leg; `hangup(NORMAL)` follows.
    pub fn close(&self, owner: usize, session: u64) -> Result<(), MediaError> {
        self.check(owner, session, None)?;
        self.send(Command::Close { session })
    }

    /// Stops the engine: every leg is closed and its plugin told `SHUTDOWN` (after the commands
    /// queued before), and waits for the driver's thread to end. `Err` with the panic's message
    /// when the driver had panicked (logged then, too).
    pub async fn shutdown(&self, task: EngineTask) -> Result<(), String> {
        // Fails when the driver is gone already (it panicked); the join says how it ended.
        let _ = self.shared.commands.send(Command::Shutdown).await;
        // The stop signal is kept until the thread has ended: were it dropped now, the driver
        // could take it before the commands queued ahead of `Shutdown`.
        let EngineTask {
            thread,
            _stop: stop,
        } = task;
        let joined = tokio::task::spawn_blocking(move || thread.join()).await;
        drop(stop);
        match joined {
            Ok(Ok(())) => Ok(()),
            Ok(Err(panic)) => Err(panic_message(&*panic).to_owned()),
            // The runtime is shutting down; the driver has been told to stop.
            Err(_) => Ok(()),
        }
    }
}

/// A panic's message: its payload when that is a string (what `panic!` makes).
fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(a payload that is not a string)")
}

/// The `a=mid:` values of an SDP.
fn mids_of(sdp: &str) -> Vec<Mid> {
    sdp.lines()
        .filter_map(|l| l.trim_end().strip_prefix("a=mid:"))
        .map(Mid::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{granted_request, set_recv_buffer};

    fn socket() -> std::net::UdpSocket {
        std::net::UdpSocket::bind("127.0.0.1:0").expect("bind")
    }

    #[test]
    fn the_receive_buffer_is_what_the_kernel_gives_for_the_request_and_zero_leaves_its_default() {
        let untouched = socket2::SockRef::from(&socket())
            .recv_buffer_size()
            .expect("SO_RCVBUF");
        assert_eq!(set_recv_buffer(socket(), 0).expect("read back"), untouched);
        // Linux caps the request at net.core.rmem_max and reports double what it took; the
        // expectation follows this machine's sysctl, whatever it is.
        #[cfg(target_os = "linux")]
        {
            let max: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
                .expect("rmem_max")
                .trim()
                .parse()
                .expect("a number");
            for asked in [64 << 10, 4 << 20, 64 << 20] {
                let got = set_recv_buffer(socket(), asked).expect("set");
                assert_eq!(got, 2 * asked.min(max), "asked {asked}, rmem_max {max}");
                assert_eq!(
                    granted_request(got),
                    asked.min(max),
                    "what the warning compares"
                );
            }
        }
    }
}
