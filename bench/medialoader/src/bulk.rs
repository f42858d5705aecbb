//! The bulk mode's sans-IO parts (`medialoader --bulk`, [`crate::bulk_run`] does the I/O).
//!
//! In bulk mode str0m still does every leg's SDP, ICE and DTLS, but the RTP goes past it: each
//! leg's SRTP keys are tapped from its DTLS (the server's `media::keytap`) and the load client
//! writes, seals and counts packets itself, as the server's fast path does. What is here:
//! the pacing of all legs' sends ([`Pacer`]), the RTP header the client writes
//! ([`write_rtp_header`]), the RFC 7983 demultiplexing of what comes back ([`classify`]), the
//! counting of echoed packets by sequence number ([`EchoCounter`]) and the receiver report a
//! leg sends once a second ([`receiver_report`]).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use huddle::media::rtp::{ReceptionReport, SeqExtender};
use huddle::media::srtp::{SrtpRx, SrtpTx};

/// When each leg sends its next packet: every leg once per `interval`, the legs' phases spread
/// evenly over one interval, so that the load is smooth (as the str0m legs' independent
/// timers made it) rather than all legs sending in the same millisecond.
#[derive(Debug)]
pub struct Pacer {
    interval: Duration,
    /// How late a leg may fall before it gives up the packets it missed instead of sending
    /// them in a burst.
    catch_up: Duration,
    due: BinaryHeap<Reverse<(Instant, usize)>>,
}

/// One send the pacer asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    /// Which leg sends.
    pub leg: usize,
    /// How long after its time.
    pub late: Duration,
    /// Packets this leg gave up before this one (it fell more than `catch_up` behind).
    pub skipped: u64,
}

impl Pacer {
    /// A pacer for legs sending one packet per `interval` (at least 1 µs).
    pub fn new(interval: Duration, catch_up: Duration) -> Pacer {
        Pacer {
            interval: interval.max(Duration::from_micros(1)),
            catch_up,
            due: BinaryHeap::new(),
        }
    }

    /// Schedules legs `0..legs`, leg `i`'s first packet at `start + i × interval / legs`.
    pub fn start(&mut self, legs: usize, start: Instant) {
        self.due.clear();
        let n = u32::try_from(legs.max(1)).unwrap_or(u32::MAX);
        for leg in 0..legs {
            let phase = self.interval * u32::try_from(leg).unwrap_or(u32::MAX) / n;
            self.due.push(Reverse((start + phase, leg)));
        }
    }

    /// Schedules one more leg (one that connected after the start), its first packet `at`.
    pub fn add(&mut self, leg: usize, at: Instant) {
        self.due.push(Reverse((at, leg)));
    }

    /// When the earliest leg is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.due.peek().map(|Reverse((at, _))| *at)
    }

    /// The next leg due at `now`, if any, rescheduled one interval on. A leg late by at most
    /// `catch_up` keeps its schedule (its next packet may then be due at once: it sends what
    /// it owes in a burst); one later than that gives up what it missed and restarts from
    /// `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<Due> {
        let Reverse((at, leg)) = *self.due.peek()?;
        if at > now {
            return None;
        }
        self.due.pop();
        let late = now - at;
        let (next, skipped) = if late > self.catch_up {
            let missed = late.as_nanos() / self.interval.as_nanos();
            (
                now + self.interval,
                u64::try_from(missed).unwrap_or(u64::MAX),
            )
        } else {
            (at + self.interval, 0)
        };
        self.due.push(Reverse((next, leg)));
        Some(Due { leg, late, skipped })
    }
}

/// What a datagram from the server is (RFC 7983 by the first byte, RFC 5761 by the second).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Stun,
    Dtls,
    Rtp,
    Rtcp,
    Other,
}

/// Demultiplexes one datagram.
pub fn classify(datagram: &[u8]) -> Kind {
    match datagram.first() {
        Some(0..=3) => Kind::Stun,
        Some(20..=63) => Kind::Dtls,
        Some(128..=191) => match datagram.get(1) {
            Some(192..=223) => Kind::Rtcp,
            Some(_) if datagram.len() >= 12 => Kind::Rtp,
            _ => Kind::Other,
        },
        _ => Kind::Other,
    }
}

/// The header extension ids the leg negotiated (RFC 8285 one-byte form: 1–14; others are not
/// written).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExtensionIds {
    pub mid: Option<u8>,
    pub abs_send_time: Option<u8>,
    pub transport_cc: Option<u8>,
}

/// One outgoing packet's header fields.
#[derive(Debug, Clone, Copy)]
pub struct Header<'a> {
    pub pt: u8,
    pub marker: bool,
    pub seq: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    /// The MID extension's value (1–16 bytes; another length is not written).
    pub mid: &'a [u8],
    /// abs-send-time, 6.18 fixed-point seconds ([`abs_send_time`]).
    pub abs_send_time: u32,
    /// The transport-wide sequence number (one per leg: each leg is one stream).
    pub transport_cc: u16,
}

/// The longest header [`write_rtp_header`] writes: 12 fixed bytes, 4 of extension header, and
/// MID (≤ 17), abs-send-time (4), transport-cc (3) padded to a word.
pub const MAX_HEADER: usize = 12 + 4 + 24;

/// Writes the RTP header (with the MID, abs-send-time and transport-cc extensions the leg
/// negotiated, as a browser or str0m sends them) at the start of `buf`; returns its length,
/// or `None` if `buf` is shorter than [`MAX_HEADER`].
pub fn write_rtp_header(buf: &mut [u8], ids: &ExtensionIds, h: &Header<'_>) -> Option<usize> {
    let buf = buf.get_mut(..MAX_HEADER)?;
    buf[0] = 0x80;
    buf[1] = h.pt & 0x7f | if h.marker { 0x80 } else { 0 };
    buf[2..4].copy_from_slice(&h.seq.to_be_bytes());
    buf[4..8].copy_from_slice(&h.timestamp.to_be_bytes());
    buf[8..12].copy_from_slice(&h.ssrc.to_be_bytes());
    let valid = |id: Option<u8>| id.filter(|id| (1..=14).contains(id));
    let mut at = 16;
    let mut element = |buf: &mut [u8], id: u8, value: &[u8]| {
        // The one-byte form's length field is the value's length minus one (1–16 bytes).
        buf[at] = id << 4 | (value.len() as u8 - 1);
        buf[at + 1..at + 1 + value.len()].copy_from_slice(value);
        at += 1 + value.len();
    };
    if let Some(id) = valid(ids.mid).filter(|_| (1..=16).contains(&h.mid.len())) {
        element(buf, id, h.mid);
    }
    if let Some(id) = valid(ids.abs_send_time) {
        element(buf, id, &h.abs_send_time.to_be_bytes()[1..]);
    }
    if let Some(id) = valid(ids.transport_cc) {
        element(buf, id, &h.transport_cc.to_be_bytes());
    }
    if at == 16 {
        return Some(12);
    }
    let end = at.next_multiple_of(4);
    buf[at..end].fill(0);
    buf[0] |= 0x10;
    buf[12..14].copy_from_slice(&[0xbe, 0xde]);
    buf[14..16].copy_from_slice(&(((end - 16) / 4) as u16).to_be_bytes());
    Some(end)
}

/// Writes the packet (`header`, then `payload` bytes of `fill`) into `buf` and seals it in
/// place with `tx` at SRTP index `index` (the stream's extended sequence number, whose low 16
/// bits `header.seq` must be): the datagram's length, or `None` if `buf` is too short or the
/// seal refused.
pub fn seal_packet(
    buf: &mut [u8],
    ids: &ExtensionIds,
    header: &Header<'_>,
    payload: usize,
    fill: u8,
    tx: &SrtpTx,
    index: u64,
) -> Option<usize> {
    let h = write_rtp_header(buf, ids, header)?;
    buf.get_mut(h..h + payload)?.fill(fill);
    tx.protect_rtp(buf, h + payload, index).ok()
}

/// Whether an echoed SRTP datagram opens with `rx` (in place) to a payload of `payload` bytes
/// of `fill`: a real echo of what the legs send.
pub fn opens_as_echo(rx: &mut SrtpRx, datagram: &mut [u8], payload: usize, fill: u8) -> bool {
    match rx.unprotect_rtp(datagram) {
        Ok(opened) => datagram
            .get(opened.header_len..opened.len)
            .is_some_and(|p| p.len() == payload && p.iter().all(|b| *b == fill)),
        Err(_) => false,
    }
}

/// abs-send-time (RTP header extension, 6.18 fixed-point seconds, 24 bits) of a time `since`
/// an arbitrary origin (only differences matter to the receiver).
pub fn abs_send_time(since: Duration) -> u32 {
    ((since.as_nanos() << 18) / 1_000_000_000) as u32 & 0x00ff_ffff
}

/// One leg's count of the echoed stream: every packet's sequence number is extended; while
/// counting, the lowest and highest extended number and the packets received, so that loss
/// is `1 − received / (highest − lowest + 1)` as in the default mode.
#[derive(Debug, Default)]
pub struct EchoCounter {
    ext: SeqExtender,
    range: Option<(u64, u64)>,
    received: u64,
    /// `expected()` and `received` at the last receiver report.
    reported: (u64, u64),
}

impl EchoCounter {
    /// One echoed packet; counted only while `counting` (its number always extends).
    pub fn record(&mut self, seq: u16, counting: bool) {
        let s = self.ext.extend(seq);
        if !counting {
            return;
        }
        self.received += 1;
        self.range = Some(match self.range {
            Some((lo, hi)) => (lo.min(s), hi.max(s)),
            None => (s, s),
        });
    }

    /// Packets counted.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Highest − lowest + 1 counted sequence numbers (0 before any).
    pub fn expected(&self) -> u64 {
        self.range.map_or(0, |(lo, hi)| hi - lo + 1)
    }

    /// The report block about the echoed stream `source` since the last call (RFC 3550
    /// §6.4.1: fraction lost over this interval, cumulative lost, extended highest number);
    /// `None` before anything was counted.
    pub fn report(&mut self, source: u32) -> Option<ReceptionReport> {
        let (_, hi) = self.range?;
        let (expected, received) = (self.expected(), self.received);
        let interval_expected = expected.saturating_sub(self.reported.0);
        let interval_lost = interval_expected.saturating_sub(received - self.reported.1);
        self.reported = (expected, received);
        let fraction_lost = (interval_lost * 256)
            .checked_div(interval_expected)
            .unwrap_or(0)
            .min(255) as u8;
        Some(ReceptionReport {
            source,
            fraction_lost,
            cumulative_lost: u32::try_from(expected.saturating_sub(received)).unwrap_or(u32::MAX),
            highest_seq: hi as u32,
            jitter: 0,
        })
    }
}

/// A receiver report (one block) from `sender`, the SSRC the leg reserved for its own RTCP:
/// what a browser sends about a stream it receives, once a second.
pub fn receiver_report(sender: u32, block: &ReceptionReport) -> Vec<u8> {
    let mut rr = huddle::media::rtp::receiver_report(block);
    rr[4..8].copy_from_slice(&sender.to_be_bytes());
    rr
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legs_are_spread_over_one_interval_and_each_sends_once_per_interval() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut pacer = Pacer::new(ms(8), ms(40));
        pacer.start(4, t0);
        // Phases 0, 2, 4, 6 ms.
        let mut order = Vec::new();
        for step in 0..=16u64 {
            let now = t0 + ms(step);
            while let Some(due) = pacer.pop_due(now) {
                assert_eq!(due.late, Duration::ZERO, "polled every ms, never late");
                assert_eq!(due.skipped, 0);
                order.push((step, due.leg));
            }
        }
        assert_eq!(
            order,
            [
                (0, 0),
                (2, 1),
                (4, 2),
                (6, 3),
                (8, 0),
                (10, 1),
                (12, 2),
                (14, 3),
                (16, 0)
            ]
        );
        assert_eq!(pacer.next_due(), Some(t0 + ms(18)));
    }

    #[test]
    fn a_late_leg_catches_up_in_a_burst_and_a_stalled_one_gives_up_what_it_missed() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut pacer = Pacer::new(ms(8), ms(40));
        pacer.start(1, t0);
        assert_eq!(pacer.pop_due(t0).map(|d| d.leg), Some(0));
        // 20 ms late (due at 8): sends the 8, 16 and 24 ms packets now, then waits for 32.
        let now = t0 + ms(28);
        let burst: Vec<Due> = std::iter::from_fn(|| pacer.pop_due(now)).collect();
        assert_eq!(burst.len(), 3);
        assert_eq!(burst[0].late, ms(20));
        assert!(burst.iter().all(|d| d.skipped == 0));
        assert_eq!(pacer.next_due(), Some(t0 + ms(32)));
        // A stall of 100 ms: the packets due meanwhile are given up, not burst out.
        let now = t0 + ms(132);
        let due = pacer.pop_due(now).expect("due");
        assert_eq!((due.late, due.skipped), (ms(100), 12));
        assert_eq!(pacer.pop_due(now), None);
        assert_eq!(pacer.next_due(), Some(now + ms(8)));
    }

    #[test]
    fn datagrams_are_told_apart_as_rfc_7983_says() {
        assert_eq!(classify(&[0, 1, 0, 0]), Kind::Stun);
        assert_eq!(classify(&[22, 254, 253]), Kind::Dtls);
        let mut rtp = [0u8; 12];
        rtp[0] = 0x80;
        rtp[1] = 96;
        assert_eq!(classify(&rtp), Kind::Rtp);
        rtp[1] = 0x80 | 96;
        assert_eq!(classify(&rtp), Kind::Rtp, "marker set");
        assert_eq!(classify(&[0x81, 201, 0, 7]), Kind::Rtcp);
        assert_eq!(classify(&[0x80, 96]), Kind::Other, "too short for RTP");
        assert_eq!(classify(&[]), Kind::Other);
        assert_eq!(classify(&[70]), Kind::Other);
    }

    #[test]
    fn the_header_parses_back_with_its_extensions() {
        let ids = ExtensionIds {
            mid: Some(9),
            abs_send_time: Some(2),
            transport_cc: Some(3),
        };
        let h = Header {
            pt: 96,
            marker: true,
            seq: 0xfffe,
            timestamp: 123_456,
            ssrc: 0xdead_beef,
            mid: b"0",
            abs_send_time: abs_send_time(Duration::from_millis(1500)),
            transport_cc: 0x1234,
        };
        let mut buf = [0xaau8; 1100];
        let len = write_rtp_header(&mut buf, &ids, &h).expect("room");
        // 12 + 4 + (2 + 4 + 3 → 12): what str0m's packets carried (1044-byte datagrams).
        assert_eq!(len, 28);
        buf[len..len + 4].copy_from_slice(b"data");
        let p = huddle::media::rtp::parse(&buf[..len + 4]).expect("RTP");
        assert_eq!(
            (p.pt, p.marker, p.seq, p.timestamp, p.ssrc, p.payload),
            (96, true, 0xfffe, 123_456, 0xdead_beef, &b"data"[..])
        );
        // The extension elements, in order, then zero padding.
        assert_eq!(&buf[12..16], &[0xbe, 0xde, 0, 3]);
        assert_eq!(&buf[16..18], &[0x90, b'0']);
        // 1.5 s in 6.18 fixed point: 1.5 × 2^18.
        assert_eq!(buf[18], 0x22);
        assert_eq!(u32::from_be_bytes([0, buf[19], buf[20], buf[21]]), 393_216);
        assert_eq!(&buf[22..25], &[0x31, 0x12, 0x34]);
        assert_eq!(&buf[25..28], &[0, 0, 0]);
        // No extension negotiated: the bare header; an id the one-byte form cannot carry is
        // left out.
        let none = ExtensionIds {
            mid: Some(15),
            ..ExtensionIds::default()
        };
        assert_eq!(write_rtp_header(&mut buf, &none, &h), Some(12));
        assert_eq!(buf[0], 0x80);
        assert_eq!(write_rtp_header(&mut [0u8; 20], &ids, &h), None);
    }

    #[test]
    fn a_sealed_packet_opens_on_the_other_side_and_only_an_intact_echo_passes() {
        use huddle::media::srtp::{LegSrtp, SrtpProfile};

        let profile = SrtpProfile::AeadAes128Gcm;
        // Two 16-byte keys and two 12-byte salts (RFC 5764 §4.2).
        let material: Vec<u8> = (0..56).collect();
        // The client seals with the client half, the server opens with it (and the reverse).
        let client = LegSrtp::from_keying_material(profile, &material, true).expect("keys");
        let mut server = LegSrtp::from_keying_material(profile, &material, false).expect("keys");
        let ids = ExtensionIds {
            mid: Some(1),
            abs_send_time: Some(2),
            transport_cc: Some(3),
        };
        let header = |seq: u16| Header {
            pt: 96,
            marker: false,
            seq,
            timestamp: 9000,
            ssrc: 42,
            mid: b"0",
            abs_send_time: 0,
            transport_cc: seq,
        };
        let mut buf = [0u8; MAX_HEADER + 1000 + 64];
        let len =
            seal_packet(&mut buf, &ids, &header(5), 1000, 0x5a, &client.tx, 5).expect("sealed");
        assert_eq!(len, 28 + 1000 + 16);
        assert_ne!(buf[28], 0x5a, "the payload is encrypted");
        // Tampered: not an echo (and the receiver's state does not move).
        let mut copy = buf;
        copy[40] ^= 1;
        assert!(!opens_as_echo(&mut server.rx, &mut copy[..len], 1000, 0x5a));
        assert!(opens_as_echo(&mut server.rx, &mut buf[..len], 1000, 0x5a));
        // Genuine, but not what the legs send.
        let len =
            seal_packet(&mut buf, &ids, &header(6), 999, 0x5a, &client.tx, 6).expect("sealed");
        assert!(!opens_as_echo(&mut server.rx, &mut buf[..len], 1000, 0x5a));
        let len =
            seal_packet(&mut buf, &ids, &header(7), 1000, 0x33, &client.tx, 7).expect("sealed");
        assert!(!opens_as_echo(&mut server.rx, &mut buf[..len], 1000, 0x5a));
        // An index whose low bits are not the header's sequence number is refused.
        assert_eq!(
            seal_packet(&mut buf, &ids, &header(8), 1000, 0x5a, &client.tx, 9),
            None
        );
        assert_eq!(
            seal_packet(&mut [0u8; 100], &ids, &header(8), 1000, 0x5a, &client.tx, 8),
            None
        );
    }

    #[test]
    fn echoed_packets_count_by_sequence_number_across_the_wrap() {
        let mut c = EchoCounter::default();
        // Before the window: extends, does not count.
        c.record(65_533, false);
        assert_eq!((c.received(), c.expected()), (0, 0));
        assert_eq!(c.report(7), None);
        // 65534, 65535, (0 lost), 1, 2.
        for seq in [65_534, 65_535, 1, 2] {
            c.record(seq, true);
        }
        assert_eq!((c.received(), c.expected()), (4, 5));
        let r = c.report(7).expect("report");
        assert_eq!(
            (r.source, r.cumulative_lost, r.highest_seq, r.fraction_lost),
            (7, 1, 65_536 + 2, 51)
        );
        // Nothing lost in the next interval.
        for seq in 3..=6 {
            c.record(seq, true);
        }
        let r = c.report(7).expect("report");
        assert_eq!((r.fraction_lost, r.cumulative_lost), (0, 1));
        let rr = receiver_report(0x0102_0304, &r);
        assert_eq!(rr.len(), 32);
        assert_eq!(&rr[..8], &[0x81, 201, 0, 7, 1, 2, 3, 4]);
        assert_eq!(&rr[8..12], &7u32.to_be_bytes());
    }
}
