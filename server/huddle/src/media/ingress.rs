//! The fast ingress's per-leg receive state, sans-IO (bench/NOTES.md, "Media: a forwarding
//! fast path outside str0m", §2 and §4.3).
//!
//! On a leg whose inbound RTP the driver opens itself (driver.rs module docs, "Fast
//! ingress"), str0m never sees that RTP, so the feedback str0m would have sent about it is ours
//! to send: transport-wide congestion control feedback (the sender's bandwidth estimate rests on
//! it), NACKs for holes, and receiver reports. This module keeps what they need — the
//! transport-wide sequence numbers with their arrival times, each stream's holes, counts and
//! jitter — taking the facts of each authenticated packet and an `Instant`, and writes plain
//! RTCP for the driver to seal on the leg's own sender SSRC. Nothing here does I/O, and every
//! table is bounded whatever the peer sends (the peer is authenticated by then, but may still
//! misbehave): at most [`MAX_STREAMS`] streams, [`TWCC_SPAN`] transport sequence numbers,
//! [`MAX_MISSING`] holes per stream.
//!
//! # Cadence
//!
//! Transport feedback every [`TWCC_INTERVAL`] when something arrived since the last one (as
//! str0m does), NACKs every [`NACK_INTERVAL`] while a stream has holes, each hole asked for at
//! most [`NACK_TRIES`] times, [`NACK_RETRY`] apart and while younger than [`NACK_MAX_AGE`];
//! receiver reports every [`RR_INTERVAL`] once a stream has packets.
//!
//! Each of these is due from its time on, but may wait a slack ([`TWCC_SLACK`], [`NACK_SLACK`],
//! [`RR_SLACK`]; [`Ingress::due`] gives both ends): the driver polls ([`Ingress::poll_due`])
//! with each of the leg's packets and at the leg's own deadline, and that deadline is the
//! second end, so it wakes for the feedback alone only when no packet came in the window. A leg
//! with audio (50 packets a second) or video at 20 frames a second or more has a packet in
//! every transport feedback and receiver report window (50 ms and 250 ms wide), so those ride
//! its packets. NACK rounds (while a hole is open) have a 10 ms window, 30 ms after the last
//! round: video at 30 frames a second lands a packet in it, but at 24 frames a second or fewer
//! (packets 40 ms or more apart) each round wakes the driver, about every 40 ms until the hole
//! is filled or given up ([`NACK_MAX_AGE`]). At a 50 ms interval with no slack, the
//! reports fell between two packets and woke the host's media thread about 30 times a second
//! at four participants (bench/NOTES.md, "Conference room (MCU) at N = 4: the wake-ups beyond
//! raw", and "Media driver wake-ups"). A sparser leg (a screen share at 5 frames a second)
//! still wakes the driver once per report.
//!
//! # Header extensions
//!
//! [`read_extensions`] reads the few extensions the ingress and the egress use (MID,
//! transport-wide sequence number, RID and repaired RID, audio level, video orientation,
//! playout delay), in the one-byte or two-byte form (RFC 8285), under the ids the peer
//! negotiated ([`ExtensionIds`]).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::rtp::SeqExtender;

/// Inbound streams (SSRCs: main and RTX) tracked per leg. A new SSRC beyond it takes the place
/// of the stream idle longest, if that one has been idle [`STREAM_IDLE`] (a stream the sender
/// replaced: a new transceiver, a renegotiation); with every stream live there is no room.
pub(crate) const MAX_STREAMS: usize = 16;
/// A stream without packets this long may give its place to a new one.
pub(crate) const STREAM_IDLE: Duration = Duration::from_secs(10);
/// Transport-wide sequence numbers kept past the first one not yet reported; a number further
/// ahead starts the register over (a restart, or a peer jumping around).
pub(crate) const TWCC_SPAN: usize = 4096;
/// Packet statuses in one feedback packet at most (≈ 1 KB with two-byte deltas); the rest goes
/// in the next.
pub(crate) const TWCC_MAX_STATUS: usize = 400;
/// Transport feedback at most this often (str0m's cadence).
pub(crate) const TWCC_INTERVAL: Duration = Duration::from_millis(50);
/// How long transport feedback may wait past its interval for a packet to ride: reports come
/// 50 to 100 ms apart, no later than libwebrtc's own receivers send them (their interval adapts
/// between 50 and 250 ms, 100 by default), so a Chrome sender sees feedback no older than from a
/// Chrome peer (its estimator reads the feedback's delay too: the RTT of its delay-based
/// controller, the congestion window). Longer than the 33 ms between frames at 30 per second,
/// so that a video leg's next packet comes first.
pub(crate) const TWCC_SLACK: Duration = Duration::from_millis(50);
/// NACK rounds at most this often.
pub(crate) const NACK_INTERVAL: Duration = Duration::from_millis(30);
/// How long a NACK round may wait past its interval: a hole is asked for within 40 ms of its
/// detection (about as str0m's 33 ms NACK timer with the driver's `TIMER_SLACK`), and asked again
/// [`NACK_RETRY`] apart, well within the second a sender keeps packets for retransmission.
pub(crate) const NACK_SLACK: Duration = Duration::from_millis(10);
/// One hole asked for again at least this long after the last time.
pub(crate) const NACK_RETRY: Duration = Duration::from_millis(100);
/// Times one hole is asked for at most.
pub(crate) const NACK_TRIES: u8 = 4;
/// A hole older than this is given up on: no longer asked for, and its repair no longer taken
/// (a repair answering the last request may come an RTT after it: holes stay open for repairs
/// this long whatever the number of requests).
pub(crate) const NACK_MAX_AGE: Duration = Duration::from_secs(1);
/// Holes kept per stream (the newest); a gap wider than this is a jump, not loss.
pub(crate) const MAX_MISSING: usize = 256;
/// How far behind the newest a hole is still asked for on a stream repaired by plain
/// retransmission (no RTX): the repair comes on the stream's own SSRC, and our SRTP replay
/// window (128) refuses anything older.
pub(crate) const PLAIN_REPAIR_REACH: u64 = 127;
/// Receiver reports at most this often.
pub(crate) const RR_INTERVAL: Duration = Duration::from_secs(1);
/// How long a receiver report may wait past its interval (RFC 3550 §6.3.1 spreads the interval
/// over 0.5–1.5 times its value anyway; the delay since the last SR is measured to the report's
/// own time, so a late report's round-trip time stays right).
pub(crate) const RR_SLACK: Duration = Duration::from_millis(250);
/// The resolution of transport feedback's arrival times (250 µs).
const TWCC_TICK: Duration = Duration::from_micros(250);
/// How far [`TwccRegister::record`] may move a read-time arrival later to keep a batch's
/// packets a tick apart (without kernel stamps only).
const TWCC_SPREAD: Duration = Duration::from_millis(1);
/// How far before the leg's start the transport feedback's reference time is put: further
/// back than any arrival stamp the driver passes on (`udp.rs`: at most 2 s old).
const TWCC_ZERO_BACK: Duration = Duration::from_secs(10);
/// NACK items (PID + BLP) per RTCP packet at most.
const MAX_NACK_ITEMS: usize = 64;
/// An RTX packet's original sequence number further back than this from the stream's newest is
/// not a repair we can use.
pub(crate) const RTX_WINDOW: u64 = 1024;

const RTPFB: u8 = 205;
const FMT_NACK: u8 = 1;
const FMT_TWCC: u8 = 15;
const RR: u8 = 201;

/// The header-extension ids the peer negotiated (absent: not negotiated).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ExtensionIds {
    pub(crate) mid: Option<u8>,
    pub(crate) transport_cc: Option<u8>,
    pub(crate) rid: Option<u8>,
    pub(crate) repaired_rid: Option<u8>,
    pub(crate) audio_level: Option<u8>,
    pub(crate) video_orientation: Option<u8>,
    pub(crate) playout_delay: Option<u8>,
}

/// The values [`read_extensions`] found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Extensions {
    /// The MID's bytes (at most 16, RFC 8843 §15) and length.
    pub(crate) mid: Option<([u8; 16], usize)>,
    pub(crate) transport_cc: Option<u16>,
    /// A RID or repaired RID is present (simulcast: not for the fast ingress).
    pub(crate) rid: bool,
    /// RFC 6464: the V bit and the level (−dBov).
    pub(crate) audio_level: Option<(bool, u8)>,
    pub(crate) video_orientation: Option<u8>,
    /// The three bytes of the playout delay (min and max, 12 bits each).
    pub(crate) playout_delay: Option<[u8; 3]>,
}

impl Extensions {
    /// The MID as text, if it is UTF-8.
    pub(crate) fn mid_str(&self) -> Option<&str> {
        let (bytes, len) = self.mid.as_ref()?;
        std::str::from_utf8(bytes.get(..*len)?).ok()
    }
}

/// Reads the header extensions of the RTP packet `packet` (its fixed header and CSRCs checked
/// by the caller, or not: anything that does not fit gives what was read so far). Unknown ids
/// are skipped; a malformed element ends the walk.
pub(crate) fn read_extensions(packet: &[u8], ids: &ExtensionIds) -> Extensions {
    let mut out = Extensions::default();
    let Some(&first) = packet.first() else {
        return out;
    };
    if first & 0x10 == 0 {
        return out;
    }
    let start = 12 + 4 * usize::from(first & 0x0f);
    let Some(head) = packet.get(start..start + 4) else {
        return out;
    };
    let profile = u16::from_be_bytes([head[0], head[1]]);
    let words = usize::from(u16::from_be_bytes([head[2], head[3]]));
    let Some(body) = packet.get(start + 4..start + 4 + 4 * words) else {
        return out;
    };
    let two_byte = match profile {
        0xbede => false,
        p if p & 0xfff0 == 0x1000 => true,
        _ => return out,
    };
    let mut i = 0;
    while i < body.len() {
        let (id, len, value_at) = if two_byte {
            let id = body[i];
            if id == 0 {
                i += 1;
                continue;
            }
            let Some(&len) = body.get(i + 1) else { break };
            (id, usize::from(len), i + 2)
        } else {
            let b = body[i];
            if b == 0 {
                i += 1;
                continue;
            }
            let id = b >> 4;
            if id == 15 {
                break;
            }
            (id, usize::from(b & 0x0f) + 1, i + 1)
        };
        let Some(value) = body.get(value_at..value_at + len) else {
            break;
        };
        i = value_at + len;
        let is = |want: Option<u8>| want == Some(id);
        if is(ids.mid) && !value.is_empty() && value.len() <= 16 {
            let mut bytes = [0u8; 16];
            bytes[..value.len()].copy_from_slice(value);
            out.mid = Some((bytes, value.len()));
        } else if is(ids.transport_cc) && value.len() >= 2 {
            out.transport_cc = Some(u16::from_be_bytes([value[0], value[1]]));
        } else if is(ids.rid) || is(ids.repaired_rid) {
            out.rid = !value.is_empty();
        } else if is(ids.audio_level) && !value.is_empty() {
            out.audio_level = Some((value[0] & 0x80 != 0, value[0] & 0x7f));
        } else if is(ids.video_orientation) && !value.is_empty() {
            out.video_orientation = Some(value[0] & 0x03);
        } else if is(ids.playout_delay) && value.len() >= 3 {
            out.playout_delay = Some([value[0], value[1], value[2]]);
        }
    }
    out
}

/// When an inbound packet arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Arrival {
    pub(crate) at: Instant,
    /// `at` is the kernel's receive timestamp of the datagram (driver/udp.rs): the packet's
    /// own time, whatever batch it was read in. Else it is when the driver read it.
    pub(crate) stamped: bool,
}

impl Arrival {
    /// The kernel's receive timestamp, as an `Instant`.
    pub(crate) fn stamped(at: Instant) -> Arrival {
        Arrival { at, stamped: true }
    }

    /// When the driver read the datagram (no kernel stamp).
    pub(crate) fn read(at: Instant) -> Arrival {
        Arrival { at, stamped: false }
    }
}

/// The transport-wide sequence numbers received and when, until reported
/// (draft-holmer-rmcat-transport-wide-cc-extensions-01).
#[derive(Debug)]
pub(crate) struct TwccRegister {
    /// Reference times count from here (64 ms units, 24 bits: wraps after 12 days).
    zero: Instant,
    ext: SeqExtender,
    /// The first sequence number of the next report.
    next: Option<u64>,
    /// Arrival of `next + i`.
    times: VecDeque<Option<Instant>>,
    feedback_count: u8,
    /// The arrival time recorded last.
    last: Option<Instant>,
    /// A number too far ahead to keep the gap, seen once: the register starts over from it only
    /// when a second one near it confirms it (one outlier must not make every packet after
    /// it look late).
    jump: Option<u64>,
}

impl TwccRegister {
    pub(crate) fn new(zero: Instant) -> TwccRegister {
        TwccRegister {
            zero,
            ext: SeqExtender::default(),
            next: None,
            times: VecDeque::new(),
            feedback_count: 0,
            last: None,
            jump: None,
        }
    }

    /// A packet with transport-wide sequence number `seq` arrived (`arrival`). One already
    /// reported (late, or a duplicate) is not reported again.
    ///
    /// A kernel stamp is the packet's own time and is taken as it is. A read time is not: the
    /// driver reads datagrams in batches, so packets that arrived spread out can get the same
    /// 250 µs tick, and a sender's probe whose packets all share one tick has no receive
    /// interval and fails (libwebrtc drops probe clusters with a zero interval). So a read-time
    /// packet within a tick of the one before is recorded a tick after it, at most
    /// [`TWCC_SPREAD`] after its own time (a jitter far below what congestion control reacts
    /// to). That cannot restore a batch's real spacing — a probe read in one late batch still
    /// looks compressed, faster than it was sent, and the sender may reject it — which is what
    /// the kernel stamps are for.
    pub(crate) fn record(&mut self, seq: u16, arrival: Arrival) {
        let at = match self.last {
            Some(last) if !arrival.stamped && arrival.at < last + TWCC_TICK => {
                (last + TWCC_TICK).min(arrival.at + TWCC_SPREAD)
            }
            _ => arrival.at,
        };
        self.last = Some(self.last.map_or(at, |l| l.max(at)));
        let ext = self.ext.extend(seq);
        let next = *self.next.get_or_insert(ext);
        if ext < next {
            return;
        }
        let mut off = (ext - next) as usize;
        if off >= TWCC_SPAN {
            if self
                .jump
                .is_none_or(|j| ext.abs_diff(j) >= TWCC_SPAN as u64)
            {
                self.jump = Some(ext);
                return;
            }
            // Confirmed, and too far ahead to keep the hole in between: start over from here.
            self.jump = None;
            self.times.clear();
            self.next = Some(ext);
            off = 0;
        }
        if self.times.len() <= off {
            self.times.resize(off + 1, None);
        }
        self.times[off].get_or_insert(at);
    }

    /// Something arrived since the last report.
    pub(crate) fn has_news(&self) -> bool {
        !self.times.is_empty()
    }

    /// Appends one feedback packet (from `sender`, about `media`) for what arrived since the
    /// last one, at most [`TWCC_MAX_STATUS`] statuses; false when there was nothing to report.
    pub(crate) fn write_report(&mut self, sender: u32, media: u32, out: &mut Vec<u8>) -> bool {
        loop {
            let Some(next) = self.next else {
                return false;
            };
            let n = self.times.len().min(TWCC_MAX_STATUS);
            if n == 0 {
                return false;
            }
            let Some(first) = self.times.iter().take(n).flatten().next().copied() else {
                // Nothing received in this stretch (only holes): nothing to tell.
                self.times.drain(..n);
                self.next = Some(next + n as u64);
                continue;
            };
            let reference = first.saturating_duration_since(self.zero).as_millis() / 64;
            let mut prev = (reference * 256) as i64;
            let mut symbols = Vec::with_capacity(n);
            let mut deltas = Vec::with_capacity(2 * n);
            let mut count = n;
            for (i, t) in self.times.iter().take(n).enumerate() {
                let Some(t) = t else {
                    symbols.push(0u8);
                    continue;
                };
                let ticks = (t.saturating_duration_since(self.zero).as_micros() / 250) as i64;
                let delta = ticks - prev;
                if (0..=255).contains(&delta) {
                    symbols.push(1);
                    deltas.push(delta as u8);
                } else if let Ok(d) = i16::try_from(delta) {
                    symbols.push(2);
                    deltas.extend_from_slice(&d.to_be_bytes());
                } else {
                    // Not expressible: it starts the next report.
                    count = i;
                    break;
                }
                prev = ticks;
            }
            let start = out.len();
            out.extend_from_slice(&[0x80 | FMT_TWCC, RTPFB, 0, 0]);
            out.extend_from_slice(&sender.to_be_bytes());
            out.extend_from_slice(&media.to_be_bytes());
            out.extend_from_slice(&(next as u16).to_be_bytes());
            out.extend_from_slice(&(count as u16).to_be_bytes());
            let reference = (reference as u32) & 0x00ff_ffff;
            out.extend_from_slice(&reference.to_be_bytes()[1..]);
            out.push(self.feedback_count);
            write_chunks(&symbols[..count], out);
            out.extend_from_slice(&deltas);
            finish_rtcp(out, start);
            self.feedback_count = self.feedback_count.wrapping_add(1);
            self.times.drain(..count);
            self.next = Some(next + count as u64);
            return true;
        }
    }
}

/// Packet status chunks for `symbols` (0 not received, 1 small delta, 2 large): a run-length
/// chunk for a run of 7 or more (or for what is left when fewer than 7 are), else a two-bit
/// status vector of the next 7.
fn write_chunks(symbols: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while i < symbols.len() {
        let s = symbols[i];
        let run = symbols[i..]
            .iter()
            .take(0x1fff)
            .take_while(|x| **x == s)
            .count();
        if run >= 7 || symbols.len() - i < 7 {
            let chunk = (u16::from(s) << 13) | run as u16;
            out.extend_from_slice(&chunk.to_be_bytes());
            i += run;
        } else {
            let mut chunk = 0xc000u16;
            for (k, s) in symbols[i..i + 7].iter().enumerate() {
                chunk |= u16::from(*s) << (12 - 2 * k);
            }
            out.extend_from_slice(&chunk.to_be_bytes());
            i += 7;
        }
    }
}

/// Pads the RTCP packet that starts at `start` to 32 bits (RFC 3550 padding: the P bit, the
/// count in the last byte) and writes its length.
fn finish_rtcp(out: &mut Vec<u8>, start: usize) {
    let len = out.len() - start;
    let pad = (4 - len % 4) % 4;
    if pad > 0 {
        out.resize(out.len() + pad - 1, 0);
        out.push(pad as u8);
        out[start] |= 0x20;
    }
    let words = ((out.len() - start) / 4 - 1) as u16;
    out[start + 2..start + 4].copy_from_slice(&words.to_be_bytes());
}

/// One hole of a stream.
#[derive(Debug, Clone, Copy)]
struct Missing {
    seq: u64,
    since: Instant,
    tries: u8,
    last: Option<Instant>,
}

/// One inbound SSRC: what its receiver reports and NACKs need.
#[derive(Debug)]
pub(crate) struct RxStream {
    pub(crate) ssrc: u32,
    /// An RTX stream (its packets repair another's; not reported, not NACKed).
    pub(crate) rtx: bool,
    /// Holes are NACKed (video with NACK feedback).
    nack: bool,
    /// The RTP clock, for jitter.
    clock_rate: u32,
    first: Option<u64>,
    highest: u64,
    received: u64,
    /// At the last report: expected and received.
    prior: (u64, u64),
    jitter: f64,
    /// The previous packet's (arrival in clock units, RTP time).
    transit: Option<(f64, u32)>,
    epoch: Instant,
    missing: VecDeque<Missing>,
    /// The middle 32 bits of the last SR's NTP time, and when it came.
    last_sr: Option<(u32, Instant)>,
    /// When a packet of the stream came last (for [`Ingress::make_room`]).
    last_packet: Instant,
    /// Its repairs come on an RTX SSRC (else on its own: [`PLAIN_REPAIR_REACH`]).
    rtx_repair: bool,
}

impl RxStream {
    fn new(ssrc: u32, rtx: bool, nack: bool, clock_rate: u32, now: Instant) -> RxStream {
        RxStream {
            ssrc,
            rtx,
            nack,
            clock_rate: clock_rate.max(1),
            first: None,
            highest: 0,
            received: 0,
            prior: (0, 0),
            jitter: 0.0,
            transit: None,
            epoch: now,
            missing: VecDeque::new(),
            last_sr: None,
            last_packet: now,
            rtx_repair: false,
        }
    }

    /// Repairs of this stream come on an RTX SSRC (RTX negotiated for its payload type).
    pub(crate) fn set_rtx_repair(&mut self, yes: bool) {
        self.rtx_repair = yes;
    }

    /// Holes are tracked (NACKed) on this stream.
    pub(crate) fn nacks(&self) -> bool {
        self.nack
    }

    /// The newest extended sequence number (SRTP index) received.
    pub(crate) fn highest(&self) -> Option<u64> {
        self.first.map(|_| self.highest)
    }

    /// An authenticated packet: `index` its extended sequence number (the SRTP index), `ts` its
    /// RTP time. Returns whether it fills a hole (a late packet or a repair).
    pub(crate) fn received(&mut self, index: u64, ts: u32, now: Instant) -> bool {
        self.received += 1;
        self.last_packet = self.last_packet.max(now);
        let arrival =
            now.saturating_duration_since(self.epoch).as_secs_f64() * f64::from(self.clock_rate);
        if let Some((prev_arrival, prev_ts)) = self.transit {
            let d = (arrival - prev_arrival) - f64::from(ts.wrapping_sub(prev_ts) as i32);
            self.jitter += (d.abs() - self.jitter) / 16.0;
        }
        self.transit = Some((arrival, ts));
        let Some(_) = self.first else {
            self.first = Some(index);
            self.highest = index;
            return false;
        };
        if index > self.highest {
            let gap = index - self.highest - 1;
            if gap as usize > MAX_MISSING {
                // A jump (the sender restarted its numbering, or a long outage): no NACKs.
                self.missing.clear();
            } else if self.nack {
                for seq in self.highest + 1..index {
                    self.missing.push_back(Missing {
                        seq,
                        since: now,
                        tries: 0,
                        last: None,
                    });
                }
                while self.missing.len() > MAX_MISSING {
                    self.missing.pop_front();
                }
            }
            self.highest = index;
            return false;
        }
        self.fill(index)
    }

    /// `index` arrived after all (late or repaired): no more NACKs for it. Whether it was a
    /// hole.
    pub(crate) fn fill(&mut self, index: u64) -> bool {
        match self.missing.binary_search_by_key(&index, |m| m.seq) {
            Ok(i) => {
                self.missing.remove(i);
                true
            }
            Err(_) => false,
        }
    }

    /// Whether `index` is a hole (so a repair of it is of use).
    #[cfg(test)]
    pub(crate) fn is_missing(&self, index: u64) -> bool {
        self.missing.binary_search_by_key(&index, |m| m.seq).is_ok()
    }

    /// A sender report about this stream arrived (`ntp` its 64-bit NTP time).
    pub(crate) fn sender_report(&mut self, ntp: u64, now: Instant) {
        self.last_sr = Some(((ntp >> 16) as u32, now));
    }

    /// Appends a NACK from `sender` for the holes due a request now; false when none is.
    fn write_nack(&mut self, sender: u32, now: Instant, out: &mut Vec<u8>) -> bool {
        let reach = if self.rtx_repair {
            u64::MAX
        } else {
            PLAIN_REPAIR_REACH
        };
        let highest = self.highest;
        self.missing.retain(|m| {
            now.saturating_duration_since(m.since) < NACK_MAX_AGE && highest - m.seq <= reach
        });
        let mut items: Vec<(u16, u16)> = Vec::new();
        let mut pid: Option<u64> = None;
        for m in self.missing.iter_mut() {
            if m.tries >= NACK_TRIES
                || m.last
                    .is_some_and(|l| now.saturating_duration_since(l) < NACK_RETRY)
            {
                continue;
            }
            match pid {
                Some(p) if m.seq > p && m.seq - p <= 16 => {
                    if let Some(item) = items.last_mut() {
                        item.1 |= 1 << (m.seq - p - 1);
                    }
                }
                _ => {
                    if items.len() == MAX_NACK_ITEMS {
                        break;
                    }
                    items.push((m.seq as u16, 0));
                    pid = Some(m.seq);
                }
            }
            m.tries += 1;
            m.last = Some(now);
        }
        if items.is_empty() {
            return false;
        }
        let start = out.len();
        out.extend_from_slice(&[0x80 | FMT_NACK, RTPFB, 0, 0]);
        out.extend_from_slice(&sender.to_be_bytes());
        out.extend_from_slice(&self.ssrc.to_be_bytes());
        for (pid, blp) in items {
            out.extend_from_slice(&pid.to_be_bytes());
            out.extend_from_slice(&blp.to_be_bytes());
        }
        finish_rtcp(out, start);
        true
    }

    /// Appends this stream's report block (RFC 3550 §6.4.1) and moves the interval on.
    fn write_report_block(&mut self, now: Instant, out: &mut Vec<u8>) {
        let first = self.first.unwrap_or(0);
        let expected = self.highest.saturating_sub(first) + 1;
        let (prior_expected, prior_received) = self.prior;
        let expected_interval = expected.saturating_sub(prior_expected);
        let received_interval = self.received.saturating_sub(prior_received);
        let lost_interval = expected_interval.saturating_sub(received_interval);
        let fraction = (lost_interval << 8)
            .checked_div(expected_interval)
            .map_or(0, |f| f.min(255) as u8);
        self.prior = (expected, self.received);
        let lost = expected.saturating_sub(self.received).min(0x7f_ffff) as u32;
        out.extend_from_slice(&self.ssrc.to_be_bytes());
        out.push(fraction);
        out.extend_from_slice(&lost.to_be_bytes()[1..]);
        out.extend_from_slice(&(self.highest as u32).to_be_bytes());
        out.extend_from_slice(&(self.jitter as u32).to_be_bytes());
        let (lsr, dlsr) = self.last_sr.map_or((0, 0), |(lsr, at)| {
            let delay = now.saturating_duration_since(at).as_micros() * 65_536 / 1_000_000;
            (lsr, u32::try_from(delay).unwrap_or(u32::MAX))
        });
        out.extend_from_slice(&lsr.to_be_bytes());
        out.extend_from_slice(&dlsr.to_be_bytes());
    }
}

/// What [`Ingress::poll`] wrote, by kind (for the engine's counters).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Feedback {
    pub(crate) reports: u32,
    pub(crate) twcc: u32,
    pub(crate) nacks: u32,
}

/// When a leg's feedback is next due ([`Ingress::due`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Due {
    /// From here on [`Ingress::poll`] has something to send: the leg's next packet sends it.
    pub(crate) at: Instant,
    /// The latest it may be sent (each kind's slack past its time): the driver wakes for it then
    /// if nothing woke it before.
    pub(crate) by: Instant,
}

/// One leg's fast-ingress receive state.
#[derive(Debug)]
pub(crate) struct Ingress {
    /// The sender SSRC of our RTCP (reserved with the leg's `SrtpTx`).
    pub(crate) own_ssrc: u32,
    pub(crate) twcc: TwccRegister,
    streams: Vec<RxStream>,
    twcc_at: Instant,
    nack_at: Instant,
    rr_at: Instant,
}

impl Ingress {
    pub(crate) fn new(own_ssrc: u32, now: Instant) -> Ingress {
        Ingress {
            own_ssrc,
            // Kernel stamps may be older than `now` (the batch that connected the leg, read
            // late): the reference must be before any arrival the register can be given, or
            // those collapse onto it (`saturating_duration_since`).
            twcc: TwccRegister::new(now.checked_sub(TWCC_ZERO_BACK).unwrap_or(now)),
            streams: Vec::new(),
            // The first report goes with the first packets (as str0m's does): a sender's first
            // probes are judged on it.
            twcc_at: now,
            nack_at: now + NACK_INTERVAL,
            rr_at: now + RR_INTERVAL,
        }
    }

    /// The state of `ssrc`, made on its first packet (`rtx`, `nack`, `clock_rate` tell what it
    /// is); `None` when [`MAX_STREAMS`] are tracked already.
    pub(crate) fn stream(
        &mut self,
        ssrc: u32,
        rtx: bool,
        nack: bool,
        clock_rate: u32,
        now: Instant,
    ) -> Option<&mut RxStream> {
        let i = match self.streams.iter().position(|s| s.ssrc == ssrc) {
            Some(i) => i,
            None if self.streams.len() >= MAX_STREAMS => return None,
            None => {
                self.streams
                    .push(RxStream::new(ssrc, rtx, nack, clock_rate, now));
                self.streams.len() - 1
            }
        };
        self.streams.get_mut(i)
    }

    /// Before a new SSRC's [`Ingress::stream`]: when the table is full, frees the place of the
    /// stream idle longest if it has been idle [`STREAM_IDLE`], and returns its SSRC (the
    /// caller forgets what it keeps about it). `None`: room already, or every stream live.
    pub(crate) fn make_room(&mut self, now: Instant) -> Option<u32> {
        if self.streams.len() < MAX_STREAMS {
            return None;
        }
        let (i, idle) = self
            .streams
            .iter()
            .enumerate()
            .min_by_key(|(_, s)| s.last_packet)
            .map(|(i, s)| (i, now.saturating_duration_since(s.last_packet)))?;
        if idle < STREAM_IDLE {
            return None;
        }
        Some(self.streams.swap_remove(i).ssrc)
    }

    /// Each stream's SSRC, whether it is RTX, and its newest index (for a hand-back to str0m).
    pub(crate) fn highest_indices(&self) -> impl Iterator<Item = (u32, bool, u64)> + '_ {
        self.streams
            .iter()
            .filter_map(|s| s.highest().map(|h| (s.ssrc, s.rtx, h)))
    }

    /// The state of `ssrc`, if it has any.
    pub(crate) fn find(&mut self, ssrc: u32) -> Option<&mut RxStream> {
        self.streams.iter_mut().find(|s| s.ssrc == ssrc)
    }

    /// Streams tracked.
    #[cfg(test)]
    pub(crate) fn streams(&self) -> usize {
        self.streams.len()
    }

    /// When [`Ingress::poll`] has something to do next, and by when it must run at the latest
    /// (module docs, "Cadence"); `None` while nothing can be due.
    pub(crate) fn due(&self) -> Option<Due> {
        let mut next: Option<Due> = None;
        let mut consider = |t: Instant, slack: Duration| {
            let by = t + slack;
            next = Some(next.map_or(Due { at: t, by }, |n| Due {
                at: n.at.min(t),
                by: n.by.min(by),
            }));
        };
        if self.twcc.has_news() {
            consider(self.twcc_at, TWCC_SLACK);
        }
        if self.streams.iter().any(|s| !s.missing.is_empty()) {
            consider(self.nack_at, NACK_SLACK);
        }
        if self.streams.iter().any(|s| !s.rtx && s.first.is_some()) {
            consider(self.rr_at, RR_SLACK);
        }
        next
    }

    /// [`Ingress::poll`] if anything is due at `now` (`Due::at`), else `None`: what the driver
    /// calls with each of the leg's packets and at the leg's deadline.
    pub(crate) fn poll_due(&mut self, now: Instant, out: &mut Vec<Vec<u8>>) -> Option<Feedback> {
        if self.due().is_none_or(|d| d.at > now) {
            return None;
        }
        Some(self.poll(now, out))
    }

    /// Writes the feedback due at `now`, each RTCP packet (plain, sender SSRC
    /// [`Ingress::own_ssrc`]) as one item of `out`, to be sealed and sent on its own.
    pub(crate) fn poll(&mut self, now: Instant, out: &mut Vec<Vec<u8>>) -> Feedback {
        let mut done = Feedback::default();
        let sender = self.own_ssrc;
        if now >= self.rr_at {
            self.rr_at = now + RR_INTERVAL;
            let mut reported: Vec<&mut RxStream> = self
                .streams
                .iter_mut()
                .filter(|s| !s.rtx && s.first.is_some())
                .collect();
            if !reported.is_empty() {
                let count = reported.len().min(31);
                let mut rr = Vec::with_capacity(8 + 24 * count);
                rr.extend_from_slice(&[0x80 | count as u8, RR, 0, 0]);
                rr.extend_from_slice(&sender.to_be_bytes());
                for s in reported.iter_mut().take(count) {
                    s.write_report_block(now, &mut rr);
                }
                finish_rtcp(&mut rr, 0);
                out.push(rr);
                done.reports += 1;
            }
        }
        if now >= self.twcc_at && self.twcc.has_news() {
            self.twcc_at = now + TWCC_INTERVAL;
            let media = self.streams.iter().find(|s| !s.rtx).map_or(0, |s| s.ssrc);
            let mut fb = Vec::with_capacity(256);
            if self.twcc.write_report(sender, media, &mut fb) {
                out.push(fb);
                done.twcc += 1;
            }
        }
        if now >= self.nack_at {
            self.nack_at = now + NACK_INTERVAL;
            for s in self.streams.iter_mut().filter(|s| !s.missing.is_empty()) {
                let mut nack = Vec::with_capacity(64);
                if s.write_nack(sender, now, &mut nack) {
                    out.push(nack);
                    done.nacks += 1;
                }
            }
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::super::udp::arrival_from_stamp;
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A TWCC packet read back: base, count, reference, fb count, per status the arrival
    /// offset in 250 µs ticks from the reference (None: not received).
    fn parse_twcc(p: &[u8]) -> (u16, u16, u32, u8, Vec<Option<i64>>) {
        assert_eq!(p[0] & 0x1f, FMT_TWCC);
        assert_eq!(p[1], RTPFB);
        let words = usize::from(u16::from_be_bytes([p[2], p[3]]));
        assert_eq!(p.len(), 4 + 4 * words, "length field");
        let mut end = p.len();
        if p[0] & 0x20 != 0 {
            end -= usize::from(p[p.len() - 1]);
        }
        let base = u16::from_be_bytes([p[12], p[13]]);
        let count = u16::from_be_bytes([p[14], p[15]]);
        let reference = u32::from_be_bytes([0, p[16], p[17], p[18]]);
        let fb = p[19];
        let mut symbols = Vec::new();
        let mut i = 20;
        while symbols.len() < usize::from(count) {
            let c = u16::from_be_bytes([p[i], p[i + 1]]);
            i += 2;
            if c & 0x8000 == 0 {
                let s = ((c >> 13) & 3) as u8;
                for _ in 0..(c & 0x1fff) {
                    symbols.push(s);
                }
            } else {
                assert_eq!(c & 0x4000, 0x4000, "two-bit vectors only");
                for k in 0..7 {
                    symbols.push(((c >> (12 - 2 * k)) & 3) as u8);
                }
            }
        }
        symbols.truncate(usize::from(count));
        let mut at = i64::from(reference) * 256;
        let mut out = Vec::new();
        for s in symbols {
            match s {
                0 => out.push(None),
                1 => {
                    at += i64::from(p[i]);
                    i += 1;
                    out.push(Some(at));
                }
                2 => {
                    at += i64::from(i16::from_be_bytes([p[i], p[i + 1]]));
                    i += 2;
                    out.push(Some(at));
                }
                _ => panic!("bad symbol"),
            }
        }
        assert!(i <= end, "deltas run past the packet");
        (base, count, reference, fb, out)
    }

    #[test]
    fn twcc_feedback_reports_every_packet_once_with_its_arrival_and_the_holes() {
        let zero = Instant::now();
        let mut r = TwccRegister::new(zero);
        let mut out = Vec::new();
        assert!(!r.write_report(1, 2, &mut out), "nothing yet");
        // 100..=120 with 105 and 110..=112 lost and 115 late; 1 ms apart.
        for seq in 100u16..=120 {
            if seq == 105 || (110..=112).contains(&seq) || seq == 115 {
                continue;
            }
            r.record(seq, Arrival::stamped(zero + ms(70 + u64::from(seq - 100))));
        }
        r.record(115, Arrival::stamped(zero + ms(200)));
        r.record(101, Arrival::stamped(zero + ms(300))); // a duplicate keeps the first arrival
        assert!(r.write_report(0xabc, 0xdef, &mut out));
        let (base, count, reference, fb, statuses) = parse_twcc(&out);
        assert_eq!(u32::from_be_bytes(out[4..8].try_into().unwrap()), 0xabc);
        assert_eq!((base, count, reference, fb), (100, 21, 1, 0));
        for (i, s) in statuses.iter().enumerate() {
            let seq = 100 + i as u16;
            let want = if seq == 105 || (110..=112).contains(&seq) {
                None
            } else if seq == 115 {
                Some(200 * 4)
            } else {
                Some(i64::from(70 + seq - 100) * 4)
            };
            assert_eq!(*s, want, "seq {seq}");
        }
        // Reported once: the next report starts after 120; a late 104 is not reported again.
        out.clear();
        r.record(104, Arrival::stamped(zero + ms(400)));
        assert!(!r.write_report(1, 2, &mut out));
        r.record(121, Arrival::stamped(zero + ms(401)));
        assert!(r.write_report(1, 2, &mut out));
        let (base, count, _, fb, statuses) = parse_twcc(&out);
        assert_eq!((base, count, fb), (121, 1, 1));
        assert_eq!(statuses, vec![Some(401 * 4)]);
    }

    #[test]
    fn twcc_state_stays_bounded_and_big_gaps_do_not_break_the_encoding() {
        let zero = Instant::now();
        let mut r = TwccRegister::new(zero);
        // A hostile walk: each number as far as the 16-bit extension allows.
        let mut seq = 0u16;
        for i in 0..10_000u64 {
            r.record(seq, Arrival::stamped(zero + Duration::from_micros(i)));
            seq = seq.wrapping_add(30_000);
            assert!(r.times.len() <= TWCC_SPAN);
        }
        // Long runs, with a gap of 3,000 lost and then 1,000 packets: several reports, each
        // at most TWCC_MAX_STATUS, the arrivals seconds apart (large deltas).
        let mut r = TwccRegister::new(zero);
        r.record(0, Arrival::stamped(zero));
        r.record(3000, Arrival::stamped(zero + ms(5000)));
        for s in 3001..4000u16 {
            r.record(
                s,
                Arrival::stamped(zero + ms(5000) + Duration::from_micros(100 * u64::from(s))),
            );
        }
        let mut reports = 0;
        let mut received = 0;
        loop {
            let mut out = Vec::new();
            if !r.write_report(1, 2, &mut out) {
                break;
            }
            assert!(out.len() <= 20 + 2 * TWCC_MAX_STATUS + 4 * TWCC_MAX_STATUS);
            let (_, count, ..) = parse_twcc(&out);
            assert!(usize::from(count) <= TWCC_MAX_STATUS);
            received += parse_twcc(&out).4.iter().flatten().count();
            reports += 1;
        }
        assert_eq!(received, 1001);
        assert!(reports >= 3, "{reports}");
    }

    #[test]
    fn a_batch_read_at_once_is_reported_a_tick_apart_within_a_millisecond() {
        let zero = Instant::now();
        let mut r = TwccRegister::new(zero);
        let at = zero + ms(100);
        for seq in 0..8u16 {
            r.record(seq, Arrival::read(at));
        }
        let mut out = Vec::new();
        assert!(r.write_report(1, 2, &mut out));
        let ticks: Vec<i64> = parse_twcc(&out).4.into_iter().flatten().collect();
        let first = 400;
        assert_eq!(
            ticks,
            vec![
                first,
                first + 1,
                first + 2,
                first + 3,
                first + 4,
                first + 4,
                first + 4,
                first + 4
            ]
        );
    }

    /// The ticks of the arrivals in the one report `r` has (all received).
    fn reported_ticks(r: &mut TwccRegister) -> Vec<i64> {
        let mut out = Vec::new();
        assert!(r.write_report(1, 2, &mut out));
        parse_twcc(&out).4.into_iter().flatten().collect()
    }

    #[test]
    fn a_probe_cluster_read_late_in_one_batch_keeps_its_spacing_with_kernel_stamps() {
        // A sender's probe: 8 packets 2 ms apart (the prober's smallest spacing), all waiting
        // in the socket until one batch reads them 30 ms after the last arrived.
        let epoch = Duration::from_secs(1_790_000_000);
        let sent: Vec<Duration> = (0..8u64).map(|i| epoch + ms(2 * i)).collect();
        let zero = Instant::now();
        let mono = zero + ms(200);
        let wall = sent[7] + ms(30);
        let mut stamped = TwccRegister::new(zero);
        let mut read = TwccRegister::new(zero);
        let mut floor = None;
        for (seq, stamp) in sent.iter().enumerate() {
            let at = arrival_from_stamp(*stamp, wall, mono, floor);
            floor = Some(at);
            stamped.record(seq as u16, Arrival::stamped(at));
            read.record(seq as u16, Arrival::read(mono));
        }
        // Stamped: 8 ticks (2 ms) apart, the last 30 ms before the read.
        let ticks = reported_ticks(&mut stamped);
        let last = 4 * (200 - 30);
        assert_eq!(
            ticks,
            (0..8).map(|i| last - 8 * (7 - i)).collect::<Vec<i64>>()
        );
        // Read time: the 14 ms cluster squeezed into 1 ms, at the read (what failed Chrome's
        // second probe).
        let ticks = reported_ticks(&mut read);
        assert_eq!(ticks.last().unwrap() - ticks[0], 4);
        assert_eq!(ticks[0], 4 * 200);
        // Two packets the kernel stamped within one tick stay there: no spread is invented.
        let mut r = TwccRegister::new(zero);
        r.record(0, Arrival::stamped(zero + ms(10)));
        r.record(
            1,
            Arrival::stamped(zero + ms(10) + Duration::from_micros(50)),
        );
        assert_eq!(reported_ticks(&mut r), vec![40, 40]);
    }

    #[test]
    fn arrivals_stamped_before_the_leg_started_keep_their_spacing() {
        // The batch that connected the leg was read late: its stamps, and the next batch's,
        // are older than the `now` the ingress started at.
        let t0 = Instant::now() + Duration::from_secs(30);
        let mut ing = Ingress::new(1, t0);
        for i in 0..5u16 {
            let at = t0 - ms(8) + ms(2 * u64::from(i));
            ing.twcc.record(i, Arrival::stamped(at));
        }
        let ticks = reported_ticks(&mut ing.twcc);
        let gaps: Vec<i64> = ticks.windows(2).map(|w| w[1] - w[0]).collect();
        assert_eq!(gaps, vec![8, 8, 8, 8], "{ticks:?}");
    }

    #[test]
    fn one_outlier_does_not_stall_the_feedback_but_a_confirmed_jump_restarts_it() {
        let zero = Instant::now();
        let mut r = TwccRegister::new(zero);
        r.record(100, Arrival::stamped(zero + ms(1)));
        r.record(100 + 20_000, Arrival::stamped(zero + ms(2)));
        r.record(101, Arrival::stamped(zero + ms(3)));
        let mut out = Vec::new();
        assert!(r.write_report(1, 2, &mut out));
        let (base, count, ..) = parse_twcc(&out);
        assert_eq!(
            (base, count),
            (100, 2),
            "the outlier left out, 101 reported"
        );
        // Two near each other far ahead: a real jump.
        r.record(30_000, Arrival::stamped(zero + ms(4)));
        r.record(30_001, Arrival::stamped(zero + ms(5)));
        out.clear();
        assert!(r.write_report(1, 2, &mut out));
        let (base, count, ..) = parse_twcc(&out);
        assert_eq!((base, count), (30_001, 1));
    }

    #[test]
    fn chunks_use_runs_and_vectors_and_cover_every_symbol() {
        let symbols = [1, 1, 1, 1, 1, 1, 1, 1, 0, 2, 1, 0, 1, 1, 1, 0, 0];
        let mut out = Vec::new();
        write_chunks(&symbols, &mut out);
        let chunks: Vec<u16> = out
            .chunks(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .collect();
        assert_eq!(chunks[0], (1 << 13) | 8, "a run of eight 1s");
        assert_eq!(chunks[1] & 0xc000, 0xc000, "then a two-bit vector");
        // 9 symbols left after the run: one vector of 7, then the last two (both 0) as a run.
        assert_eq!(chunks.len(), 3);
        assert_eq!(chunks[2], 2);
    }

    /// What went out when, as the driver serves a leg's feedback.
    #[derive(Default)]
    struct Served {
        /// Transport feedback: when, and how many arrivals it reported.
        twcc: Vec<(Instant, usize)>,
        /// NACKs: when, and the sequence numbers asked for.
        nacks: Vec<(Instant, Vec<u64>)>,
        rr: Vec<Instant>,
        /// Wake-ups for the feedback alone (no packet arrived).
        wakeups: Vec<Instant>,
    }

    /// Feeds `arrivals` (time, sequence number) of one video stream with NACKs into `ing` and
    /// serves its feedback as the driver does: polled with a packet once due
    /// (`Driver::fast_rtp_in`), else on a wake-up of its own at `Due::by`; wake-ups until
    /// `until`.
    fn serve(ing: &mut Ingress, arrivals: &[(Instant, u64)], until: Instant) -> Served {
        let mut served = Served::default();
        let mut next = arrivals.iter().peekable();
        for step in 0.. {
            // `poll` stopped moving a deadline: the data below would be truncated.
            assert!(step < 100_000, "serve did not finish");
            let wake = ing.due().map(|d| d.by).filter(|w| *w <= until);
            let now = match (next.peek(), wake) {
                (Some(&&(at, seq)), w) if w.is_none_or(|w| at <= w) => {
                    next.next();
                    ing.twcc.record(seq as u16, Arrival::stamped(at));
                    ing.stream(0xaa, false, true, 90_000, at).unwrap().received(
                        seq,
                        3000 * seq as u32,
                        at,
                    );
                    at
                }
                (_, Some(w)) => {
                    served.wakeups.push(w);
                    w
                }
                _ => break,
            };
            let mut out = Vec::new();
            if ing.poll_due(now, &mut out).is_none() {
                continue;
            }
            for p in &out {
                match (p[1], p[0] & 0x1f) {
                    (RTPFB, FMT_TWCC) => served
                        .twcc
                        .push((now, parse_twcc(p).4.iter().flatten().count())),
                    (RTPFB, FMT_NACK) => {
                        let mut asked = Vec::new();
                        crate::media::repair::for_each_nack(p, |_, seq| asked.push(u64::from(seq)));
                        served.nacks.push((now, asked));
                    }
                    (RR, _) => served.rr.push(now),
                    other => panic!("unexpected feedback {other:?}"),
                }
            }
        }
        served
    }

    #[test]
    fn feedback_rides_the_packets_of_a_30_fps_stream_within_its_bounds() {
        // One packet per frame at 30 frames a second for 10 s, one lost in
        // every 50: every piece of feedback must go with a packet, none with a wake-up of its
        // own, and none later than its slack allows.
        let t0 = Instant::now();
        let mut ing = Ingress::new(1, t0);
        let frame = Duration::from_micros(33_333);
        let lost = |seq: u64| seq % 50 == 25;
        let arrivals: Vec<(Instant, u64)> = (0..300u64)
            .filter(|s| !lost(*s))
            .map(|s| (t0 + frame * s as u32, s))
            .collect();
        let end = arrivals.last().unwrap().0;
        let served = serve(&mut ing, &arrivals, end + TWCC_INTERVAL + TWCC_SLACK);
        let early: Vec<_> = served.wakeups.iter().filter(|w| **w <= end).collect();
        assert!(early.is_empty(), "feedback woke the driver on its own");
        // Transport feedback: every arrival reported once, by the bound after the last one,
        // reports 50–100 ms apart.
        let reported: usize = served.twcc.iter().map(|r| r.1).sum();
        assert_eq!(reported, arrivals.len());
        for w in served.twcc.windows(2) {
            let gap = w[1].0 - w[0].0;
            assert!(
                // What the docs promise on the wire (as libwebrtc), not the constants.
                (ms(50)..=ms(100)).contains(&gap),
                "transport feedback {gap:?} apart"
            );
        }
        // Receiver reports: about one a second, at most the slack late.
        assert!(served.rr.len() >= 9, "{} receiver reports", served.rr.len());
        for w in served.rr.windows(2) {
            assert!(w[1] - w[0] <= RR_INTERVAL + RR_SLACK, "{:?}", w[1] - w[0]);
        }
        // Each hole asked for within one NACK round and its slack of the packet that showed
        // it, then again within a retry, a round and its slack of the last time.
        for hole in (0..300u64).filter(|s| lost(*s) && *s < 290) {
            let shown = t0 + frame * (hole as u32 + 1);
            let asked: Vec<Instant> = served
                .nacks
                .iter()
                .filter(|n| n.1.contains(&hole))
                .map(|n| n.0)
                .collect();
            assert!(
                asked.len() >= 2,
                "hole {hole} asked for {} times",
                asked.len()
            );
            assert!(asked[0] - shown <= ms(40), "hole {hole} first asked late");
            for w in asked.windows(2) {
                assert!(w[1] - w[0] <= NACK_RETRY + NACK_INTERVAL + NACK_SLACK);
            }
        }
    }

    #[test]
    fn feedback_for_the_last_packets_goes_by_its_bound_when_none_follows() {
        // A burst, then silence: its transport feedback and the receiver report are sent on
        // wake-ups of their own, each no later than its slack past its time.
        let t0 = Instant::now();
        let mut ing = Ingress::new(1, t0);
        let arrivals: Vec<(Instant, u64)> = (0..10u64).map(|s| (t0 + ms(5 * s), s)).collect();
        let served = serve(&mut ing, &arrivals, t0 + ms(1500));
        let reported: usize = served.twcc.iter().map(|r| r.1).sum();
        assert_eq!(reported, 10, "every arrival reported");
        // The first report went with the first packet; the rest, due 50 ms later, by a
        // wake-up at its bound.
        assert_eq!(served.twcc.len(), 2);
        assert_eq!(served.twcc[0].0, t0);
        assert_eq!(served.twcc[1].0, t0 + TWCC_INTERVAL + TWCC_SLACK);
        assert_eq!(served.rr, vec![t0 + RR_INTERVAL + RR_SLACK]);
        assert_eq!(served.wakeups.len(), 2);
    }

    #[test]
    fn a_hole_before_silence_is_still_asked_for_each_try_within_its_bound() {
        let t0 = Instant::now();
        let mut ing = Ingress::new(1, t0);
        let arrivals = [(t0, 0), (t0 + ms(5), 2)];
        let served = serve(&mut ing, &arrivals, t0 + NACK_MAX_AGE);
        let asked: Vec<Instant> = served
            .nacks
            .iter()
            .filter(|n| n.1 == vec![1])
            .map(|n| n.0)
            .collect();
        assert_eq!(asked.len(), usize::from(NACK_TRIES), "{asked:?}");
        assert!(asked[0] - (t0 + ms(5)) <= ms(40));
        for w in asked.windows(2) {
            assert!(
                w[1] - w[0] <= NACK_RETRY + NACK_INTERVAL + NACK_SLACK,
                "{asked:?}"
            );
        }
    }

    #[test]
    fn at_20_fps_each_nack_round_wakes_the_driver_while_transport_feedback_rides() {
        // Packets 50 ms apart, one lost: a NACK round is due 30 ms after the last and sent by
        // 40 ms, a window no packet lands in, so every round is a wake-up of its own (module
        // docs, "Cadence"); transport feedback and receiver reports still ride the packets.
        let t0 = Instant::now();
        let mut ing = Ingress::new(1, t0);
        let arrivals: Vec<(Instant, u64)> = (0..60u64)
            .filter(|s| *s != 10)
            .map(|s| (t0 + ms(50 * s), s))
            .collect();
        let end = arrivals.last().unwrap().0;
        let served = serve(&mut ing, &arrivals, end);
        let rounds: Vec<Instant> = served
            .nacks
            .iter()
            .filter(|n| n.1.contains(&10))
            .map(|n| n.0)
            .collect();
        assert_eq!(rounds.len(), usize::from(NACK_TRIES), "{rounds:?}");
        // The first request goes with the packet that shows the hole (packet 11, at 550 ms);
        // each later one is a wake-up of its own, and every wake-up comes while the hole is
        // open: none for other feedback.
        assert_eq!(rounds[0], t0 + ms(550));
        for r in &rounds[1..] {
            assert!(
                served.wakeups.contains(r),
                "round at {:?} rode a packet",
                *r - t0
            );
        }
        let shown = t0 + ms(550);
        for w in &served.wakeups {
            assert!(
                *w > shown && *w <= shown + NACK_MAX_AGE + ms(40),
                "a wake-up at {:?} for other feedback",
                *w - t0
            );
        }
        // The cost, on record: 21 wake-ups (590, 630, 670, 740 ms, ... 1570 ms), about one per
        // 40 ms for the second the hole stays open, though only 3 of them ask for it (a retry
        // is due 100 ms after the last request; the others are rounds with nothing to ask).
        let wakeups: Vec<_> = served.wakeups.iter().map(|w| *w - t0).collect();
        assert_eq!(wakeups.len(), 21, "{wakeups:?}");
        assert_eq!(wakeups[..3], [ms(590), ms(630), ms(670)]);
    }

    #[test]
    fn the_earliest_kind_sets_when_feedback_is_due_and_the_strictest_by_when() {
        let t0 = Instant::now();
        let mut ing = Ingress::new(1, t0);
        assert_eq!(ing.due(), None, "nothing received: nothing due");
        // A packet, reported at once: then transport feedback (news), a NACK round (a hole)
        // and a receiver report are all pending.
        ing.twcc.record(0, Arrival::stamped(t0));
        ing.stream(7, false, true, 90_000, t0)
            .unwrap()
            .received(10, 0, t0);
        ing.poll(t0, &mut Vec::new());
        let t1 = t0 + ms(20);
        ing.twcc.record(1, Arrival::stamped(t1));
        ing.find(7).unwrap().received(12, 0, t1);
        // TWCC at t0 + 50 (by + 100), NACK at t0 + 30 (by + 40), RR at t0 + 1 s (by + 1.25 s).
        assert_eq!(
            ing.due(),
            Some(Due {
                at: t0 + NACK_INTERVAL,
                by: t0 + NACK_INTERVAL + NACK_SLACK
            })
        );
        assert_eq!(ing.poll_due(t0 + ms(29), &mut Vec::new()), None);
        // A NACK round at its time, before TWCC's: the next round's time (t0 + 60) is after
        // TWCC's (t0 + 50), but its bound (t0 + 70) is before TWCC's (t0 + 100). Due: the
        // earliest time of any kind, and the strictest bound of any kind.
        assert!(ing.poll_due(t0 + ms(30), &mut Vec::new()).is_some());
        assert_eq!(
            ing.due(),
            Some(Due {
                at: t0 + ms(50),
                by: t0 + ms(70)
            })
        );
        // The hole repaired: TWCC's time, and its own bound, which is before the RR's.
        assert!(ing.find(7).unwrap().fill(11));
        assert_eq!(
            ing.due(),
            Some(Due {
                at: t0 + TWCC_INTERVAL,
                by: t0 + TWCC_INTERVAL + TWCC_SLACK
            })
        );
        // Reported: the RR's alone.
        let mut out = Vec::new();
        assert_eq!(
            ing.poll_due(t0 + TWCC_INTERVAL, &mut out).map(|f| f.twcc),
            Some(1)
        );
        assert_eq!(
            ing.due(),
            Some(Due {
                at: t0 + RR_INTERVAL,
                by: t0 + RR_INTERVAL + RR_SLACK
            })
        );
    }

    #[test]
    fn holes_are_nacked_a_bounded_number_of_times_and_no_more_once_filled() {
        let t0 = Instant::now();
        let mut ing = Ingress::new(77, t0);
        let s = ing.stream(1000, false, true, 90_000, t0).unwrap();
        for i in [10u64, 11, 14, 15, 40] {
            s.received(i, 3000 * i as u32, t0);
        }
        assert!(s.is_missing(12) && s.is_missing(39) && !s.is_missing(14));
        // 14 in; 12 comes late: filled, never NACKed.
        assert!(s.received(12, 0, t0));
        let mut out = Vec::new();
        let fb = ing.poll(t0 + NACK_INTERVAL, &mut out);
        assert_eq!(fb.nacks, 1);
        let nack = out
            .iter()
            .find(|p| p[1] == RTPFB && p[0] & 0x1f == 1)
            .unwrap();
        assert_eq!(u32::from_be_bytes(nack[4..8].try_into().unwrap()), 77);
        assert_eq!(u32::from_be_bytes(nack[8..12].try_into().unwrap()), 1000);
        let mut asked = Vec::new();
        crate::media::repair::for_each_nack(nack, |ssrc, seq| {
            assert_eq!(ssrc, 1000);
            asked.push(u64::from(seq));
        });
        let mut want = vec![13];
        want.extend(16..40);
        assert_eq!(asked, want);
        // Asked again only after NACK_RETRY, at most NACK_TRIES times in all.
        let mut t = t0 + NACK_INTERVAL;
        let mut rounds = 1;
        for _ in 0..40 {
            t += NACK_INTERVAL;
            out.clear();
            rounds += ing.poll(t, &mut out).nacks;
        }
        assert_eq!(rounds, u32::from(NACK_TRIES));
        assert!(ing.find(1000).unwrap().missing.is_empty());
    }

    #[test]
    fn a_hole_takes_its_repair_after_its_last_request_until_it_is_too_old() {
        let t0 = Instant::now();
        let mut ing = Ingress::new(1, t0);
        let s = ing.stream(7, false, true, 90_000, t0).unwrap();
        s.received(1, 0, t0);
        s.received(3, 0, t0);
        let mut t = t0;
        let mut asked = 0;
        while asked < u32::from(NACK_TRIES) {
            t += NACK_INTERVAL;
            asked += ing.poll(t, &mut Vec::new()).nacks;
        }
        // Asked four times; no more requests, but the hole stays open for the repair.
        let mut out = Vec::new();
        assert_eq!(ing.poll(t + NACK_RETRY + NACK_INTERVAL, &mut out).nacks, 0);
        let s = ing.find(7).unwrap();
        assert!(
            s.is_missing(2),
            "the repair answering the last request is still taken"
        );
        assert!(s.fill(2));
        // A hole past NACK_MAX_AGE is closed.
        let s = ing.find(7).unwrap();
        s.received(5, 0, t0);
        ing.poll(t0 + NACK_MAX_AGE + NACK_INTERVAL, &mut Vec::new());
        assert!(!ing.find(7).unwrap().is_missing(4));
    }

    #[test]
    fn without_rtx_holes_beyond_the_replay_window_are_not_asked_for() {
        let t0 = Instant::now();
        for (rtx, want) in [(false, vec![151u64]), (true, vec![1, 151])] {
            let mut ing = Ingress::new(1, t0);
            let s = ing.stream(7, false, true, 90_000, t0).unwrap();
            s.set_rtx_repair(rtx);
            s.received(0, 0, t0);
            s.received(2, 0, t0);
            for i in 3..151 {
                s.received(i, 0, t0);
            }
            s.received(152, 0, t0);
            let mut out = Vec::new();
            ing.poll(t0 + NACK_INTERVAL, &mut out);
            let mut asked = Vec::new();
            for p in &out {
                crate::media::repair::for_each_nack(p, |_, seq| asked.push(u64::from(seq)));
            }
            assert_eq!(asked, want, "rtx {rtx}");
        }
    }

    #[test]
    fn an_idle_stream_gives_its_place_to_a_new_one_but_a_live_one_never() {
        let t0 = Instant::now();
        let mut ing = Ingress::new(1, t0);
        for ssrc in 0..MAX_STREAMS as u32 {
            ing.stream(ssrc, false, false, 90_000, t0)
                .unwrap()
                .received(1, 0, t0);
        }
        // All live: no room, nothing evicted.
        let soon = t0 + STREAM_IDLE / 2;
        ing.find(3).unwrap().received(2, 0, soon);
        assert_eq!(ing.make_room(soon), None);
        assert!(ing.stream(100, false, false, 90_000, soon).is_none());
        // Later, the longest idle goes (not 3, which had a packet since).
        let later = t0 + STREAM_IDLE;
        let gone = ing.make_room(later).expect("an idle stream evicted");
        assert_ne!(gone, 3);
        assert!(ing.stream(100, false, false, 90_000, later).is_some());
        // 20 SSRCs in turn, the old ones idle: each new one is placed.
        let mut t = later;
        for ssrc in 200..220 {
            t += STREAM_IDLE;
            ing.make_room(t);
            assert!(
                ing.stream(ssrc, false, false, 90_000, t).is_some(),
                "{ssrc}"
            );
            ing.find(ssrc).unwrap().received(1, 0, t);
        }
        assert_eq!(ing.streams(), MAX_STREAMS);
    }

    #[test]
    fn a_jump_is_not_loss_and_holes_are_capped() {
        let t0 = Instant::now();
        let mut ing = Ingress::new(1, t0);
        let s = ing.stream(5, false, true, 90_000, t0).unwrap();
        s.received(1, 0, t0);
        s.received(1 + MAX_MISSING as u64 + 2, 0, t0);
        assert!(s.missing.is_empty(), "a jump");
        s.received(1 + MAX_MISSING as u64 + 2 + MAX_MISSING as u64, 0, t0);
        assert_eq!(s.missing.len(), MAX_MISSING - 1);
        // Streams are capped.
        for ssrc in 0..100 {
            let _ = ing.stream(ssrc, false, false, 8000, t0);
        }
        assert_eq!(ing.streams(), MAX_STREAMS);
        assert!(ing.stream(12345, false, false, 8000, t0).is_none());
    }

    #[test]
    fn receiver_reports_count_loss_per_interval_and_echo_the_last_sender_report() {
        let t0 = Instant::now();
        let mut ing = Ingress::new(9, t0);
        {
            let s = ing.stream(0x55, false, false, 48_000, t0).unwrap();
            for i in (0..100u64).filter(|i| i % 10 != 3) {
                s.received(70_000 + i, 960 * i as u32, t0 + ms(20 * i));
            }
            s.sender_report(0x1122_3344_5566_7788, t0 + ms(500));
        }
        let _ = ing.stream(0x66, true, false, 90_000, t0).unwrap(); // RTX: not reported
        let mut out = Vec::new();
        let fb = ing.poll(t0 + RR_INTERVAL + ms(500), &mut out);
        assert_eq!(fb.reports, 1);
        let rr = &out[0];
        assert_eq!(rr[0] & 0x1f, 1, "one block");
        assert_eq!(rr[1], RR);
        assert_eq!(rr.len(), 8 + 24);
        assert_eq!(u32::from_be_bytes(rr[8..12].try_into().unwrap()), 0x55);
        assert_eq!(rr[12], 25, "10 of 100 lost: 25/256");
        assert_eq!(u32::from_be_bytes([0, rr[13], rr[14], rr[15]]), 10);
        assert_eq!(
            u32::from_be_bytes(rr[16..20].try_into().unwrap()),
            70_099,
            "extended highest"
        );
        assert_eq!(
            u32::from_be_bytes(rr[24..28].try_into().unwrap()),
            0x3344_5566,
            "LSR"
        );
        let dlsr = u32::from_be_bytes(rr[28..32].try_into().unwrap());
        assert_eq!(dlsr, 65_536, "one second since the SR");
        // The next interval: nothing new, nothing lost.
        out.clear();
        ing.poll(t0 + 2 * RR_INTERVAL + ms(600), &mut out);
        assert_eq!(out[0][12], 0);
    }

    #[test]
    fn extensions_are_read_in_both_forms_under_the_negotiated_ids() {
        let ids = ExtensionIds {
            mid: Some(4),
            transport_cc: Some(3),
            rid: Some(10),
            audio_level: Some(1),
            video_orientation: Some(13),
            playout_delay: Some(6),
            ..ExtensionIds::default()
        };
        // One-byte form: MID "1", transport-cc 0x1234, audio level V=1 level 30, padding.
        let mut p = vec![0x90, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2];
        p.extend_from_slice(&[0xbe, 0xde, 0, 3]);
        p.extend_from_slice(&[0x40, b'1', 0x31, 0x12, 0x34, 0x10, 0x80 | 30, 0xd0, 0x01]);
        p.extend_from_slice(&[0, 0, 0]);
        let e = read_extensions(&p, &ids);
        assert_eq!(e.mid_str(), Some("1"));
        assert_eq!(e.transport_cc, Some(0x1234));
        assert_eq!(e.audio_level, Some((true, 30)));
        assert_eq!(e.video_orientation, Some(1));
        assert!(!e.rid);
        // Two-byte form: RID "h", playout delay.
        let mut p = vec![0x90, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2];
        p.extend_from_slice(&[0x10, 0x00, 0, 2]);
        p.extend_from_slice(&[10, 1, b'h', 6, 3, 1, 2, 3]);
        let e = read_extensions(&p, &ids);
        assert!(e.rid);
        assert_eq!(e.playout_delay, Some([1, 2, 3]));
        // Truncated or hostile: no panic, what fits is read.
        for cut in 0..p.len() {
            let _ = read_extensions(&p[..cut], &ids);
        }
        let mut bad = vec![0x9f, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2];
        bad.extend_from_slice(&[0xbe, 0xde, 0xff, 0xff, 0x4f]);
        assert_eq!(read_extensions(&bad, &ids), Extensions::default());
    }
}
