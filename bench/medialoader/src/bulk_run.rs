//! The bulk mode's I/O (`medialoader --bulk`): one thread drives every connected leg.
//!
//! A leg arrives here once str0m has done its ICE and DTLS (`main.rs`, `bulk_handshake`), with
//! its socket (non-blocking, connected to the server's media address), its `Rtc` and the SRTP
//! contexts built from its tapped keys. From then on:
//!
//! * **RTP out**: the [`Pacer`] says which leg sends; its packet is written into one buffer
//!   ([`write_rtp_header`] and the filler payload), sealed in place with the leg's `SrtpTx` at
//!   the packet's extended sequence number, and sent with one `send` (a leg's socket is its
//!   own, so that the server tells the legs apart by source address, as it does browsers).
//! * **In**: the sockets sit in one level-triggered epoll set; each wake-up reads one datagram
//!   from each ready socket (a socket with more stays ready for the next round). Echoed RTP is
//!   counted by sequence number ([`EchoCounter`]) from its clear header; one packet in
//!   `verify_every` (and each leg's first) is opened with the leg's `SrtpRx` and its payload
//!   compared with what the legs send, so the count is of real echoes. RTCP from the server
//!   (its transport feedback, receiver and sender reports) is counted and dropped: no RTP goes
//!   through the client's str0m, so it has nothing to apply it to.
//! * **STUN and DTLS** go to the leg's `Rtc`, which is driven at its own deadlines (checked
//!   every 5 ms): its ICE agent keeps sending consent checks, without which the server's
//!   ICE-lite agent drops the pair after 15 s.
//! * **RTCP out**: a receiver report about the echoed stream once a second per leg, sealed
//!   with the leg's `SrtpTx` under an SSRC reserved for it, as a browser's receiver sends.
//!
//! Per echoed packet the client thus does one seal, one `send`, one `recv` and (in
//! `verify_every`) one open: a few µs, so one core drives several hundred legs.

use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use huddle::media::srtp::LegSrtp;
use rustix::buffer::spare_capacity;
use rustix::event::{epoll, Timespec};
use str0m::net::{Protocol, Receive};
use str0m::{Event, IceConnectionState, Input, Output, Rtc};

use crate::bulk::{
    abs_send_time, classify, opens_as_echo, receiver_report, seal_packet, EchoCounter,
    ExtensionIds, Header, Kind, Pacer, MAX_HEADER,
};

/// Every payload byte the legs send; an echo must bring the same back.
const FILL: u8 = 0x5a;

/// A connected leg, handed over by its handshake.
pub struct Leg {
    /// Non-blocking, connected to `remote`.
    pub socket: UdpSocket,
    pub local: SocketAddr,
    /// The server's media address (where str0m's ICE nominated).
    pub remote: SocketAddr,
    pub rtc: Rtc,
    pub srtp: LegSrtp,
    /// The VP8 payload type.
    pub pt: u8,
    /// The SSRC str0m announced for the leg's video (str0m never sends RTP on it here).
    pub ssrc: u32,
    /// The SSRC reserved in `srtp.tx` for our own receiver reports.
    pub own_rtcp_ssrc: u32,
    pub mid: String,
    pub ids: ExtensionIds,
}

impl std::fmt::Debug for Leg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leg")
            .field("local", &self.local)
            .field("remote", &self.remote)
            .field("ssrc", &self.ssrc)
            .finish_non_exhaustive()
    }
}

/// What the measuring thread and the engine share.
#[derive(Debug, Default)]
pub struct Shared {
    /// Set once every leg connected: the legs start sending and counting.
    pub sending: AtomicBool,
    /// Set at the end of the measured window.
    pub stop: AtomicBool,
    /// Echoed packets so far, and RTP packets sent (read at both ends of the CPU window).
    pub echoed_live: AtomicU64,
    pub sent_live: AtomicU64,
}

/// How the legs send.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Between two packets of one leg.
    pub interval: Duration,
    /// RTP payload bytes per packet.
    pub payload: usize,
    /// One echoed packet in this many (per leg) is opened and checked.
    pub verify_every: u64,
}

/// The run's totals, over every leg.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tally {
    pub legs: u64,
    /// RTP packets sent while counting.
    pub sent: u64,
    /// Echoed packets counted, and the sum over legs of highest − lowest + 1.
    pub received: u64,
    pub expected: u64,
    /// Sends more than 2 ms after their time, and packets given up by a leg that fell more
    /// than five intervals behind: the client's own shortfall.
    pub late_sends: u64,
    pub skipped: u64,
    pub send_errors: u64,
    /// Echoed packets opened: authenticated with the expected payload, or not.
    pub verified: u64,
    pub verify_failed: u64,
    /// RTP of another payload type (the server's repairs), RTCP, STUN/DTLS from the server.
    pub other_rtp: u64,
    pub rtcp_in: u64,
    pub handshake_in: u64,
    pub reports_sent: u64,
    /// `Rtc` timer passes, and legs whose client-side ICE agent lost the server.
    pub rtc_passes: u64,
    pub ice_lost: u64,
}

struct Live {
    leg: Leg,
    /// The next packet's extended sequence number (its SRTP index).
    seq: u64,
    timestamp: u32,
    transport_cc: u16,
    counter: EchoCounter,
    /// The echoed stream's SSRC (for the receiver report), from its first packet.
    echo_ssrc: Option<u32>,
    /// Echoed packets seen (for sampling the ones opened).
    echoed: u64,
    rtc_due: Instant,
    next_report: Instant,
}

/// Drives the legs that arrive on `legs` until `shared.stop`, then returns the totals.
pub fn run(legs: Receiver<Leg>, shared: Arc<Shared>, settings: Settings) -> anyhow::Result<Tally> {
    let poll = epoll::create(epoll::CreateFlags::CLOEXEC).context("epoll")?;
    let mut live: Vec<Live> = Vec::new();
    let mut pacer = Pacer::new(settings.interval, settings.interval * 5);
    let mut buf = vec![0u8; MAX_HEADER + settings.payload + 64];
    let mut events: Vec<epoll::Event> = Vec::with_capacity(1024);
    let mut tally = Tally::default();
    let origin = Instant::now();
    let mut counting = false;
    let mut housekeeping = origin;
    let verify_every = settings.verify_every.max(1);
    loop {
        // Legs connected since the last round (more arrive until every handshake ended).
        while let Ok(leg) = legs.try_recv() {
            let index = live.len();
            epoll::add(
                &poll,
                &leg.socket,
                epoll::EventData::new_u64(index as u64),
                epoll::EventFlags::IN,
            )
            .context("epoll add")?;
            let now = Instant::now();
            if counting {
                pacer.add(index, now);
            }
            live.push(Live {
                leg,
                seq: 1,
                timestamp: 0,
                transport_cc: 1,
                counter: EchoCounter::default(),
                echo_ssrc: None,
                echoed: 0,
                rtc_due: now,
                next_report: now,
            });
        }
        if shared.stop.load(Ordering::Relaxed) {
            break;
        }
        let now = Instant::now();
        if !counting && shared.sending.load(Ordering::Relaxed) {
            counting = true;
            pacer.start(live.len(), now);
        }
        while let Some(due) = pacer.pop_due(now) {
            let Some(l) = live.get_mut(due.leg) else {
                continue;
            };
            tally.skipped += due.skipped;
            if due.late > Duration::from_millis(2) {
                tally.late_sends += 1;
            }
            if send_rtp(l, &mut buf, &settings, now - origin, &mut tally) {
                shared.sent_live.fetch_add(1, Ordering::Relaxed);
            }
        }
        if now >= housekeeping {
            for l in &mut live {
                if l.rtc_due <= now && l.leg.rtc.is_alive() {
                    tally.rtc_passes += 1;
                    if l.leg.rtc.handle_input(Input::Timeout(now)).is_ok() {
                        drain(l, &mut tally);
                    }
                }
                if counting && l.next_report <= now {
                    l.next_report = now + Duration::from_secs(1);
                    send_report(l, &mut tally);
                }
            }
            housekeeping = now + Duration::from_millis(5);
        }
        let wake = pacer
            .next_due()
            .map_or(housekeeping, |due| due.min(housekeeping));
        let wait = wake.saturating_duration_since(Instant::now());
        let timeout = Timespec {
            tv_sec: wait.as_secs() as _,
            tv_nsec: wait.subsec_nanos() as _,
        };
        match epoll::wait(&poll, spare_capacity(&mut events), Some(&timeout)) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e).context("epoll wait"),
        }
        let now = Instant::now();
        for event in events.drain(..) {
            let Some(l) = usize::try_from(event.data.u64())
                .ok()
                .and_then(|i| live.get_mut(i))
            else {
                continue;
            };
            receive(
                l,
                &mut buf,
                now,
                counting,
                verify_every,
                &settings,
                &shared,
                &mut tally,
            );
        }
    }
    tally.legs = live.len() as u64;
    for l in &live {
        tally.received += l.counter.received();
        tally.expected += l.counter.expected();
    }
    Ok(tally)
}

/// Writes, seals and sends the leg's next packet: four per "frame" at 90 kHz, the timestamps
/// of a ~30 fps stream, as the default mode sends. Whether it went out.
fn send_rtp(
    l: &mut Live,
    buf: &mut [u8],
    settings: &Settings,
    since: Duration,
    t: &mut Tally,
) -> bool {
    let seq = l.seq;
    let marker = seq.is_multiple_of(4);
    let header = Header {
        pt: l.leg.pt,
        marker,
        seq: seq as u16,
        timestamp: l.timestamp,
        ssrc: l.leg.ssrc,
        mid: l.leg.mid.as_bytes(),
        abs_send_time: abs_send_time(since),
        transport_cc: l.transport_cc,
    };
    // Each index is used once: the sequence only moves on.
    l.seq += 1;
    l.transport_cc = l.transport_cc.wrapping_add(1);
    if marker {
        l.timestamp = l.timestamp.wrapping_add(3000);
    }
    let Some(len) = seal_packet(
        buf,
        &l.leg.ids,
        &header,
        settings.payload,
        FILL,
        &l.leg.srtp.tx,
        seq,
    ) else {
        t.send_errors += 1;
        return false;
    };
    match l.leg.socket.send(&buf[..len]) {
        Ok(_) => {
            t.sent += 1;
            true
        }
        Err(_) => {
            t.send_errors += 1;
            false
        }
    }
}

/// Reads one datagram of the leg's socket, if any.
#[allow(clippy::too_many_arguments)]
fn receive(
    l: &mut Live,
    buf: &mut [u8],
    now: Instant,
    counting: bool,
    verify_every: u64,
    settings: &Settings,
    shared: &Shared,
    t: &mut Tally,
) {
    let n = match l.leg.socket.recv(buf) {
        Ok(n) => n,
        Err(e) if e.kind() == ErrorKind::WouldBlock => return,
        Err(_) => return,
    };
    let datagram = &mut buf[..n];
    match classify(datagram) {
        Kind::Rtp if datagram[1] & 0x7f == l.leg.pt => {
            let seq = u16::from_be_bytes([datagram[2], datagram[3]]);
            let ssrc = u32::from_be_bytes([datagram[8], datagram[9], datagram[10], datagram[11]]);
            l.counter.record(seq, counting);
            l.echo_ssrc.get_or_insert(ssrc);
            shared.echoed_live.fetch_add(1, Ordering::Relaxed);
            if l.echoed.is_multiple_of(verify_every) {
                if opens_as_echo(&mut l.leg.srtp.rx, datagram, settings.payload, FILL) {
                    t.verified += 1;
                } else {
                    t.verify_failed += 1;
                }
            }
            l.echoed += 1;
        }
        Kind::Rtp => t.other_rtp += 1,
        Kind::Rtcp => t.rtcp_in += 1,
        Kind::Stun | Kind::Dtls => {
            t.handshake_in += 1;
            if !l.leg.rtc.is_alive() {
                return;
            }
            let Ok(input) = Receive::new(Protocol::Udp, l.leg.remote, l.leg.local, datagram) else {
                return;
            };
            if l.leg.rtc.handle_input(Input::Receive(now, input)).is_ok() {
                drain(l, t);
            }
        }
        Kind::Other => {}
    }
}

/// Sends what the leg's `Rtc` wants sent, until it names its next deadline.
fn drain(l: &mut Live, t: &mut Tally) {
    loop {
        match l.leg.rtc.poll_output() {
            Ok(Output::Transmit(tx)) => {
                if tx.destination == l.leg.remote {
                    let _ = l.leg.socket.send(&tx.contents);
                }
            }
            Ok(Output::Timeout(at)) => {
                l.rtc_due = at;
                return;
            }
            Ok(Output::Event(Event::IceConnectionStateChange(
                IceConnectionState::Disconnected,
            ))) => t.ice_lost += 1,
            Ok(Output::Event(_)) => {}
            Err(_) => return,
        }
    }
}

/// The leg's receiver report about the echoed stream, once it has one.
fn send_report(l: &mut Live, t: &mut Tally) {
    let Some(block) = l.echo_ssrc.and_then(|s| l.counter.report(s)) else {
        return;
    };
    let report = receiver_report(l.leg.own_rtcp_ssrc, &block);
    // Room for the SRTCP trailer (tag and E‖index, at most 20 bytes).
    let mut out = [0u8; 64];
    out[..report.len()].copy_from_slice(&report);
    if let Ok(len) = l.leg.srtp.tx.protect_rtcp(&mut out, report.len()) {
        if l.leg.socket.send(&out[..len]).is_ok() {
            t.reports_sent += 1;
        }
    }
}
