//! Loss repair for the streams the driver sends outside str0m (the fast egress, bench/NOTES.md
//! "Media fast path, step 2"), sans-IO.
//!
//! str0m answers a receiver's NACK from its own RTX cache, which holds only what str0m wrote;
//! a forwarded stream the driver seals itself would go unrepaired. So each such stream keeps a
//! [`SentCache`] of what went out (plaintext header and payload, bounded by count and age), the
//! driver opens a copy of the receiver's SRTCP and hands it to [`for_each_nack`], and
//! [`SentCache::resend`] says what to send back: an RTX packet (RFC 4588: the original
//! sequence number, then the payload, on the receiver's RTX SSRC and payload type with our own
//! RTX sequence) when RTX is negotiated, else the original packet again.
//!
//! # Nonce rule
//!
//! A retransmission without RTX repeats the original (SSRC, index), so it must be the same
//! bytes, sealed again into the same ciphertext: only packets we sealed ourselves are resent
//! that way ([`Sent::ours`]); one str0m wrote is resent only as RTX, whose SSRC is ours alone
//! (the driver never lets str0m send on it: its packets on a fast stream are not nackable, and
//! without bandwidth estimation str0m sends no padding).

use std::sync::Arc;
use std::time::{Duration, Instant};

/// RTCP transport-layer feedback (RFC 4585 §6.2).
const RTPFB: u8 = 205;
/// Generic NACK (RFC 4585 §6.2.1).
const FMT_NACK: u8 = 1;

/// How many packets a stream's cache keeps at most.
pub(crate) const CACHE_PACKETS: usize = 512;
/// How old a cached packet may be and still be resent: a receiver asks again after about a
/// round trip, and a frame this late is past its jitter buffer anyway.
pub(crate) const CACHE_AGE: Duration = Duration::from_millis(1500);
/// One packet is resent at most this often (a receiver repeating its NACK before the repair
/// could arrive) ...
const RESEND_INTERVAL: Duration = Duration::from_millis(10);
/// ... and at most this many times ...
const MAX_RESENDS: u8 = 4;
/// ... and a stream's repairs in one [`RATIO_WINDOW`] stay under about this share of the
/// packets it sent in the previous one (plus [`RESEND_FLOOR`]): a receiver that loses much
/// (an overloaded one, or one on a congested path) must not get more on top of the stream,
/// which only deepens its loss (str0m caps its RTX the same way, 15 % by default).
const RESEND_SHARE: u32 = 6;
const RESEND_FLOOR: u32 = 4;
const RATIO_WINDOW: Duration = Duration::from_secs(1);

/// Longest RTP header the cache keeps (fixed header, one-byte extensions: MID and the few
/// values kept); a packet with a longer one is sent but not cached.
pub(crate) const MAX_HEADER: usize = 64;

/// One packet sent on a stream.
#[derive(Debug)]
pub(crate) struct Sent {
    /// Its extended sequence number (the SRTP index).
    pub seq: u64,
    at: Instant,
    header: [u8; MAX_HEADER],
    header_len: u8,
    /// Shared with the packet str0m handed up (a reference count, no copy).
    payload: Arc<[u8]>,
    /// The RTX payload type for its payload type on the receiver's side, if RTX is negotiated.
    rtx_pt: Option<u8>,
    /// We sealed it ourselves (else str0m did): only then may it be sent again as it was.
    ours: bool,
    resends: u8,
    last_resend: Option<Instant>,
}

impl Sent {
    /// The header as sent (its SSRC, sequence number, payload type, extensions).
    pub fn header(&self) -> &[u8] {
        &self.header[..usize::from(self.header_len)]
    }

    pub fn payload(&self) -> &[u8] {
        &self.payload
    }
}

/// What to send to repair one lost packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resend {
    /// An RTX packet: seal it at index `rtx_seq` of the RTX stream.
    Rtx { rtx_seq: u64 },
    /// The original packet again: seal it at its own index.
    Again { seq: u64 },
}

/// The packets recently sent on one stream, and its RTX sequence.
///
/// A ring indexed by sequence number (`seq % capacity`, each slot tagged with its whole
/// sequence number): a NACKed packet is found, or known absent, in one step, however hostile
/// the NACK (review of the fast egress, #3).
#[derive(Debug)]
pub(crate) struct SentCache {
    /// Slot `seq % len`: the packet of `seq`, if it is still held. Allocated at the first
    /// insert.
    slots: Vec<Option<Sent>>,
    capacity: usize,
    max_age: Duration,
    /// The highest sequence number kept: only `newest - capacity < seq <= newest` can be held.
    newest: Option<u64>,
    /// The next RTX sequence number (extended: the RTX stream's SRTP index).
    next_rtx_seq: u64,
    /// Start of the current window, packets sent and repairs made in it, packets sent in
    /// the previous one ([`RESEND_SHARE`]).
    window: Option<Instant>,
    sent: u32,
    resent: u32,
    sent_before: u32,
    /// Slots looked at for NACKs so far (tests bound the work a NACK causes).
    #[cfg(test)]
    lookups: u64,
}

impl SentCache {
    pub(crate) fn new(max_packets: usize, max_age: Duration) -> SentCache {
        SentCache {
            slots: Vec::new(),
            capacity: max_packets.max(1),
            max_age,
            newest: None,
            // Low, as the rewriter starts its streams: no rollover counter to signal.
            next_rtx_seq: 1,
            window: None,
            sent: 0,
            resent: 0,
            sent_before: 0,
            #[cfg(test)]
            lookups: 0,
        }
    }

    /// Moves the repair budget's window to `now`.
    fn tick(&mut self, now: Instant) {
        match self.window {
            Some(start) if now.saturating_duration_since(start) < RATIO_WINDOW => {}
            Some(start) => {
                // A stream silent for more than a window has no recent rate to speak of.
                let gap = now.saturating_duration_since(start);
                self.sent_before = if gap < RATIO_WINDOW * 2 { self.sent } else { 0 };
                self.sent = 0;
                self.resent = 0;
                self.window = Some(now);
            }
            None => self.window = Some(now),
        }
    }

    fn slot(&self, seq: u64) -> usize {
        // The remainder is below `capacity`, a usize.
        (seq % self.capacity as u64) as usize
    }

    /// Keeps a packet sent at `now` (in place of the one `capacity` sequence numbers before).
    /// `false` (and nothing kept) when the header is longer than [`MAX_HEADER`] or the packet
    /// is older than what the cache spans.
    pub(crate) fn insert(
        &mut self,
        now: Instant,
        seq: u64,
        header: &[u8],
        payload: Arc<[u8]>,
        rtx_pt: Option<u8>,
        ours: bool,
    ) -> bool {
        let Ok(header_len) = u8::try_from(header.len()) else {
            return false;
        };
        if header.len() > MAX_HEADER {
            return false;
        }
        if self
            .newest
            .is_some_and(|n| n.saturating_sub(seq) >= self.capacity as u64)
        {
            return false;
        }
        self.tick(now);
        self.sent = self.sent.saturating_add(1);
        if self.slots.is_empty() {
            self.slots.resize_with(self.capacity, || None);
        }
        let mut h = [0; MAX_HEADER];
        h[..header.len()].copy_from_slice(header);
        let i = self.slot(seq);
        self.slots[i] = Some(Sent {
            seq,
            at: now,
            header: h,
            header_len,
            payload,
            rtx_pt,
            ours,
            resends: 0,
            last_resend: None,
        });
        self.newest = Some(self.newest.map_or(seq, |n| n.max(seq)));
        true
    }

    /// Packets held and not older than the cache's age, counted from the newest.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        let Some(newest) = self.newest else {
            return 0;
        };
        let Some(at) = self.slots[self.slot(newest)].as_ref().map(|e| e.at) else {
            return 0;
        };
        self.slots
            .iter()
            .flatten()
            .filter(|e| at.saturating_duration_since(e.at) <= self.max_age)
            .count()
    }

    /// The extended value of a NACKed 16-bit sequence number: the one at or below the newest
    /// packet sent, within what the cache spans; `None` for any other (never held).
    pub(crate) fn extend(&self, seq: u16) -> Option<u64> {
        let newest = self.newest?;
        let back = u64::from((newest as u16).wrapping_sub(seq));
        if back >= self.capacity as u64 {
            return None;
        }
        newest.checked_sub(back)
    }

    /// How to repair `seq` at `now` (with RTX if `rtx` is negotiated on the stream), and the
    /// cached packet to build it from; `None` when the stream's repair budget is spent, or
    /// the packet is not held any more, too old, resent just now or too often, or (without
    /// RTX) not ours to send again. One slot looked at, at most.
    pub(crate) fn resend(&mut self, now: Instant, seq: u64, rtx: bool) -> Option<(Resend, &Sent)> {
        self.tick(now);
        let budget = self.sent.max(self.sent_before) / RESEND_SHARE + RESEND_FLOOR;
        if self.resent >= budget {
            return None;
        }
        let newest = self.newest?;
        if seq > newest || newest - seq >= self.capacity as u64 {
            return None;
        }
        let i = self.slot(seq);
        #[cfg(test)]
        {
            self.lookups += 1;
        }
        let max_age = self.max_age;
        let Self {
            slots,
            next_rtx_seq,
            resent,
            ..
        } = self;
        let entry = slots.get_mut(i)?.as_mut().filter(|e| e.seq == seq)?;
        if now.saturating_duration_since(entry.at) > max_age
            || entry.resends >= MAX_RESENDS
            || entry
                .last_resend
                .is_some_and(|t| now.saturating_duration_since(t) < RESEND_INTERVAL)
        {
            return None;
        }
        let how = match (rtx, entry.rtx_pt) {
            (true, Some(_)) => {
                let rtx_seq = *next_rtx_seq;
                *next_rtx_seq += 1;
                Resend::Rtx { rtx_seq }
            }
            _ if entry.ours => Resend::Again { seq: entry.seq },
            _ => return None,
        };
        entry.resends += 1;
        entry.last_resend = Some(now);
        *resent += 1;
        Some((how, entry))
    }
}

/// The indices of one stream already sealed (by us or by str0m), so that none is sealed twice
/// with other contents: a packet whose rewritten sequence number was used before (a source
/// switch and a late packet of the old source can land on one) or is older than the window
/// is not sent. A 128-index window, as SRTP's replay window.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SealedIndices {
    top: Option<u64>,
    /// Bit `i`: `top - i` was used.
    used: u128,
}

impl SealedIndices {
    /// Marks `index` used; `false` if it was used already or is too old to tell.
    pub(crate) fn claim(&mut self, index: u64) -> bool {
        if index > MAX_RTP_INDEX {
            return false;
        }
        let Some(top) = self.top else {
            self.top = Some(index);
            self.used = 1;
            return true;
        };
        if index > top {
            let shift = index - top;
            // The receiver guesses an index within 2^15 of the highest it saw (RFC 3711
            // §3.3.1): a longer jump cannot be its next packet, and must not move the window
            // past every index to come (review of the fast egress, #1).
            if shift >= MAX_INDEX_JUMP {
                return false;
            }
            self.used = if shift >= 128 { 0 } else { self.used << shift };
            self.used |= 1;
            self.top = Some(index);
            return true;
        }
        let age = top - index;
        if age >= 128 || self.used & (1 << age) != 0 {
            return false;
        }
        self.used |= 1 << age;
        true
    }
}

/// The highest SRTP index (48 bits, RFC 3711 §3.3.1).
const MAX_RTP_INDEX: u64 = (1 << 48) - 1;
/// How far past the highest sealed index the next may be.
const MAX_INDEX_JUMP: u64 = 1 << 15;

/// Appends to `out` the RTX packet (RFC 4588 §4) repairing `sent`: its header with the RTX
/// SSRC, payload type and sequence number, then the original sequence number and payload.
/// `None` (nothing appended) when `sent` has no RTX payload type (or no whole RTP header).
pub(crate) fn write_rtx(sent: &Sent, rtx_ssrc: u32, rtx_seq: u16, out: &mut Vec<u8>) -> Option<()> {
    let rtx_pt = sent.rtx_pt?;
    let header = sent.header();
    if header.len() < 12 {
        return None;
    }
    let start = out.len();
    out.extend_from_slice(header);
    out[start + 1] = (header[1] & 0x80) | (rtx_pt & 0x7f);
    out[start + 2..start + 4].copy_from_slice(&rtx_seq.to_be_bytes());
    out[start + 8..start + 12].copy_from_slice(&rtx_ssrc.to_be_bytes());
    out.extend_from_slice(&(sent.seq as u16).to_be_bytes());
    out.extend_from_slice(&sent.payload);
    Some(())
}

/// Appends the original packet of `sent` to `out`, byte for byte as it was first sealed.
pub(crate) fn write_again(sent: &Sent, out: &mut Vec<u8>) {
    out.extend_from_slice(sent.header());
    out.extend_from_slice(&sent.payload);
}

/// Most sequence numbers of one RTCP packet whose repair is looked at: a receiver names what
/// it lost since its last feedback, far fewer; a 2 KB packet of full bitmasks names ~8,500.
pub(crate) const MAX_NACKED_PER_RTCP: usize = 256;
/// Most repairs sent for one RTCP packet, all streams together: what one NACK can make the
/// driver send at once, whatever each stream's budget ([`RESEND_SHARE`]) still allows.
pub(crate) const MAX_REPAIRS_PER_RTCP: usize = 32;

/// The (media SSRC, sequence number) pairs the Generic NACKs of the compound RTCP `packet`
/// ask for: the first [`MAX_NACKED_PER_RTCP`], each once, sorted.
pub(crate) fn nack_requests(packet: &[u8]) -> Vec<(u32, u16)> {
    let mut asked = Vec::new();
    for_each_nack(packet, |ssrc, seq| {
        if asked.len() < MAX_NACKED_PER_RTCP {
            asked.push((ssrc, seq));
        }
    });
    asked.sort_unstable();
    asked.dedup();
    asked
}

/// Calls `f(media_ssrc, seq)` for every sequence number a Generic NACK in the compound RTCP
/// `packet` (plaintext) asks for. A malformed packet ends the walk; what was read before
/// stands.
pub(crate) fn for_each_nack(packet: &[u8], mut f: impl FnMut(u32, u16)) {
    super::rtp::for_each_rtcp(packet, |pt, fmt, body| {
        let len = body.len();
        // With the P bit the last byte counts padding octets, which are no FCI (RFC 3550 §6.4.1).
        let padding = if body[0] & 0x20 != 0 {
            usize::from(body[len - 1])
        } else {
            0
        };
        if pt == RTPFB && fmt == FMT_NACK && len >= 16 {
            let media = u32::from_be_bytes([body[8], body[9], body[10], body[11]]);
            let fcis = body
                .get(12..len.saturating_sub(padding))
                .unwrap_or_default();
            for fci in fcis.chunks_exact(4) {
                let pid = u16::from_be_bytes([fci[0], fci[1]]);
                let blp = u16::from_be_bytes([fci[2], fci[3]]);
                f(media, pid);
                for bit in 0..16u16 {
                    if blp & (1 << bit) != 0 {
                        f(media, pid.wrapping_add(bit + 1));
                    }
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(seq: u16, ssrc: u32) -> Vec<u8> {
        let mut h = vec![0x90, 0x80 | 96];
        h.extend_from_slice(&seq.to_be_bytes());
        h.extend_from_slice(&1234u32.to_be_bytes());
        h.extend_from_slice(&ssrc.to_be_bytes());
        // One-byte extensions: MID "1" at id 4.
        h.extend_from_slice(&[0xbe, 0xde, 0, 1, 0x40, b'1', 0, 0]);
        h
    }

    fn nack(media: u32, fci: &[(u16, u16)]) -> Vec<u8> {
        let words = 2 + fci.len() as u16;
        let mut p = vec![0x80 | FMT_NACK, RTPFB];
        p.extend_from_slice(&words.to_be_bytes());
        p.extend_from_slice(&1u32.to_be_bytes());
        p.extend_from_slice(&media.to_be_bytes());
        for (pid, blp) in fci {
            p.extend_from_slice(&pid.to_be_bytes());
            p.extend_from_slice(&blp.to_be_bytes());
        }
        p
    }

    #[test]
    fn nacks_are_read_from_compound_rtcp_with_their_bitmasks() {
        let mut compound = vec![0x80, 201, 0, 1, 0, 0, 0, 9]; // an empty RR
        compound.extend(nack(0xabcd, &[(100, 0b101), (65535, 1)]));
        compound.extend(crate::media::rtp::pli(9, 0x1234));
        let mut seen = Vec::new();
        for_each_nack(&compound, |ssrc, seq| seen.push((ssrc, seq)));
        assert_eq!(
            seen,
            vec![
                (0xabcd, 100),
                (0xabcd, 101),
                (0xabcd, 103),
                (0xabcd, 65535),
                (0xabcd, 0)
            ]
        );
        // Truncated: the length says more than there is.
        let mut cut = nack(1, &[(5, 0)]);
        cut.truncate(14);
        for_each_nack(&cut, |_, _| panic!("nothing to read"));
        for_each_nack(&[0x81, RTPFB, 0, 1, 0, 0, 0, 0], |_, _| panic!("no FCI"));
        // Padded: the last word is padding, no FCI.
        let mut padded = nack(1, &[(5, 0), (0x0102, 0x0304)]);
        padded[0] |= 0x20;
        let n = padded.len();
        padded[n - 4..].copy_from_slice(&[0, 0, 0, 4]);
        let mut seen = Vec::new();
        for_each_nack(&padded, |ssrc, seq| seen.push((ssrc, seq)));
        assert_eq!(seen, vec![(1, 5)]);
    }

    #[test]
    fn the_cache_is_bounded_by_count_and_age() {
        let t0 = Instant::now();
        let mut cache = SentCache::new(4, Duration::from_millis(100));
        for seq in 1..=6u64 {
            assert!(cache.insert(
                t0,
                seq,
                &header(seq as u16, 7),
                Arc::from([seq as u8]),
                None,
                true
            ));
        }
        assert_eq!(cache.len(), 4, "count");
        assert!(cache.resend(t0, 2, false).is_none(), "evicted by count");
        assert!(cache.resend(t0, 3, false).is_some());
        // 150 ms later everything before is too old, and goes at the next insert.
        let later = t0 + Duration::from_millis(150);
        assert!(cache.resend(later, 4, false).is_none(), "too old to resend");
        cache.insert(later, 7, &header(7, 7), Arc::from([7u8]), None, true);
        assert_eq!(cache.len(), 1, "age");
        assert!(
            !cache.insert(later, 8, &[0; MAX_HEADER + 1], Arc::from([]), None, true),
            "a header too long is not kept"
        );
    }

    #[test]
    fn a_lost_packet_is_repaired_as_rtx_or_as_it_was_and_not_too_often() {
        let t0 = Instant::now();
        let mut cache = SentCache::new(CACHE_PACKETS, CACHE_AGE);
        let h = header(40, 0x1111);
        cache.insert(t0, 40, &h, Arc::from(&b"payload"[..]), Some(97), true);
        cache.insert(
            t0,
            41,
            &header(41, 0x1111),
            Arc::from(&b"str0m's"[..]),
            Some(97),
            false,
        );
        cache.insert(
            t0,
            42,
            &header(42, 0x1111),
            Arc::from(&b"no rtx"[..]),
            None,
            false,
        );

        let (how, sent) = cache.resend(t0, 40, true).expect("held");
        assert_eq!(how, Resend::Rtx { rtx_seq: 1 });
        let mut out = Vec::new();
        write_rtx(sent, 0x2222, 1, &mut out).unwrap();
        assert_eq!(out[1], 0x80 | 97, "marker kept, RTX payload type");
        assert_eq!(&out[2..4], &1u16.to_be_bytes(), "RTX sequence");
        assert_eq!(&out[4..8], &1234u32.to_be_bytes(), "timestamp kept");
        assert_eq!(&out[8..12], &0x2222u32.to_be_bytes(), "RTX SSRC");
        assert_eq!(&out[12..20], &h[12..20], "extensions kept");
        assert_eq!(
            &out[20..22],
            &40u16.to_be_bytes(),
            "original sequence number"
        );
        assert_eq!(&out[22..], b"payload");

        assert!(
            cache
                .resend(t0 + Duration::from_millis(5), 40, true)
                .is_none(),
            "asked again right away: once is enough"
        );
        let (how, _) = cache
            .resend(t0 + Duration::from_millis(20), 40, true)
            .unwrap();
        assert_eq!(how, Resend::Rtx { rtx_seq: 2 }, "a new RTX sequence number");
        for i in 3..=MAX_RESENDS {
            let at = t0 + Duration::from_millis(20 * u64::from(i));
            assert!(cache.resend(at, 40, true).is_some());
        }
        assert!(
            cache
                .resend(t0 + Duration::from_secs(1), 40, true)
                .is_none(),
            "resends are capped"
        );

        // Without RTX: ours goes again as it was; str0m's may not (its nonce is str0m's).
        let mut cache = SentCache::new(CACHE_PACKETS, CACHE_AGE);
        cache.insert(
            t0,
            41,
            &header(41, 0x1111),
            Arc::from(&b"str0m's"[..]),
            Some(97),
            false,
        );
        cache.insert(
            t0,
            42,
            &header(42, 0x1111),
            Arc::from(&b"no rtx"[..]),
            None,
            false,
        );
        assert!(cache.resend(t0, 41, false).is_none());
        assert!(
            cache.resend(t0, 42, true).is_none(),
            "no RTX type, not ours"
        );
        let mut cache = SentCache::new(8, CACHE_AGE);
        cache.insert(t0, 9, &h, Arc::from(&b"payload"[..]), None, true);
        let (how, sent) = cache.resend(t0, 9, true).unwrap();
        assert_eq!(how, Resend::Again { seq: 9 });
        let mut out = Vec::new();
        write_again(sent, &mut out);
        assert_eq!(&out[..h.len()], &h[..]);
        assert_eq!(&out[h.len()..], b"payload");
    }

    #[test]
    fn an_index_is_claimed_once_and_old_ones_are_refused() {
        let mut w = SealedIndices::default();
        assert!(w.claim(10));
        assert!(!w.claim(10), "twice");
        assert!(w.claim(12));
        assert!(w.claim(11), "late, unused");
        assert!(!w.claim(11));
        assert!(w.claim(200));
        assert!(!w.claim(12), "beyond the window: cannot tell, refused");
        assert!(w.claim(73), "age 127");
        assert!(!w.claim(72), "age 128");
        assert!(w.claim(1000));
        assert!(!w.claim(200));
    }

    #[test]
    fn repairs_stay_a_share_of_what_the_stream_sends() {
        let t0 = Instant::now();
        let mut cache = SentCache::new(CACHE_PACKETS, CACHE_AGE);
        for seq in 0..60u64 {
            cache.insert(
                t0,
                seq,
                &header(seq as u16, 7),
                Arc::from([0u8]),
                Some(97),
                true,
            );
        }
        // 60 sent: 60 / 6 + 4 = 14 repairs in this window, whatever is asked.
        let granted = (0..60)
            .filter(|s| cache.resend(t0, *s, true).is_some())
            .count();
        assert_eq!(granted, 14);
        // The next window: the budget comes from the packets sent before.
        let t1 = t0 + RATIO_WINDOW;
        for seq in 60..70u64 {
            cache.insert(
                t1,
                seq,
                &header(seq as u16, 7),
                Arc::from([0u8]),
                Some(97),
                true,
            );
        }
        let granted = (20..70)
            .filter(|s| cache.resend(t1, *s, true).is_some())
            .count();
        assert_eq!(granted, 14, "60 sent in the window before");
    }

    #[test]
    fn nacked_sequence_numbers_extend_below_the_newest_sent() {
        let t0 = Instant::now();
        let mut cache = SentCache::new(8, CACHE_AGE);
        assert_eq!(cache.extend(5), None, "nothing sent");
        cache.insert(t0, 0x1_0002, &header(2, 1), Arc::from([]), None, true);
        assert_eq!(cache.extend(1), Some(0x1_0001));
        assert_eq!(cache.extend(0xfffe), Some(0xfffe), "before the rollover");
        assert_eq!(cache.extend(3), None, "newer than anything sent");
        assert_eq!(cache.extend(0xfff0), None, "older than the cache spans");
        let mut low = SentCache::new(8, CACHE_AGE);
        low.insert(t0, 3, &header(3, 1), Arc::from([]), None, true);
        assert_eq!(low.extend(0xfffe), None, "no index below 0");
    }

    #[test]
    fn a_late_packet_mapped_far_ahead_neither_panics_nor_blocks_the_stream() {
        // Review #1: a late packet that once mapped to u64::MAX took the window's top, and
        // every index after it was refused; in the cache, extending around it overflowed.
        let mut w = SealedIndices::default();
        assert!(w.claim(1));
        assert!(!w.claim(u64::MAX), "beyond any SRTP index");
        assert!(!w.claim(MAX_RTP_INDEX), "a jump the receiver cannot follow");
        assert!(w.claim(2), "the stream goes on");
        assert!(w.claim(2 + MAX_INDEX_JUMP - 1));
        let t0 = Instant::now();
        let mut cache = SentCache::new(8, CACHE_AGE);
        cache.insert(t0, u64::MAX, &header(0xffff, 1), Arc::from([]), None, true);
        assert_eq!(cache.extend(0x10), None);
        assert_eq!(cache.extend(0xfffe), Some(u64::MAX - 1));
        assert!(cache.resend(t0, 5, true).is_none());
    }

    #[test]
    fn a_hostile_nack_costs_bounded_lookups_and_bytes() {
        // A 2 KB compound RTCP packet: NACKs for unknown SSRCs, for the stream with every
        // bitmask bit set (out of range and in range), and repeats of one sequence number.
        const SSRC: u32 = 0x5151;
        let t0 = Instant::now();
        let mut cache = SentCache::new(CACHE_PACKETS, CACHE_AGE);
        let size = 1000usize;
        for seq in 1000..1000 + CACHE_PACKETS as u64 {
            let payload: Arc<[u8]> = Arc::from(vec![0u8; size]);
            cache.insert(t0, seq, &header(seq as u16, SSRC), payload, Some(97), true);
        }
        let mut rtcp = Vec::new();
        let wide: Vec<(u16, u16)> = (0..100u16).map(|i| (i.wrapping_mul(655), 0xffff)).collect();
        rtcp.extend(nack(SSRC, &wide));
        rtcp.extend(nack(SSRC, &[(1200, 0xffff); 100]));
        rtcp.extend(nack(0xdead, &[(1, 0xffff); 100]));
        rtcp.extend(nack(SSRC, &[(1300, 0); 200]));
        assert!(rtcp.len() >= 2000, "{}", rtcp.len());
        let mut seen = 0usize;
        for_each_nack(&rtcp, |_, _| seen += 1);
        assert!(seen > 5_000, "{seen} sequence numbers named");

        let asked = nack_requests(&rtcp);
        assert!(asked.len() <= MAX_NACKED_PER_RTCP);
        let (mut repairs, mut bytes) = (0usize, 0usize);
        for (ssrc, seq) in asked {
            if ssrc != SSRC || repairs == MAX_REPAIRS_PER_RTCP {
                continue;
            }
            let Some(seq) = cache.extend(seq) else {
                continue;
            };
            if let Some((_, sent)) = cache.resend(t0, seq, true) {
                repairs += 1;
                bytes += sent.header().len() + 2 + sent.payload().len();
            }
        }
        assert!(
            cache.lookups <= MAX_NACKED_PER_RTCP as u64,
            "{}",
            cache.lookups
        );
        assert!(repairs > 0 && repairs <= MAX_REPAIRS_PER_RTCP);
        assert!(bytes <= MAX_REPAIRS_PER_RTCP * (MAX_HEADER + 2 + size));
        // The stream's budget for this second: a sixth of what it sent, plus a few.
        let budget = CACHE_PACKETS / RESEND_SHARE as usize + RESEND_FLOOR as usize;
        let mut more = 0;
        for seq in 1000..1000 + CACHE_PACKETS as u64 {
            more += usize::from(cache.resend(t0, seq, true).is_some());
        }
        assert_eq!(repairs + more, budget, "one second's repairs");
    }
}
