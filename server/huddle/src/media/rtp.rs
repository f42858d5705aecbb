//! The RTP/RTCP bytes that cross the plugin boundary, and the sequence/timestamp rewriting of
//! the forwarding fast path. Pure functions over byte slices; no I/O.
//!
//! Plugins see plain RTP: the fixed header, CSRCs and the payload. Header extensions are the
//! transport's business (transport-wide sequence numbers, abs-send-time, MID) and are consumed
//! by the host; a packet a plugin sends may carry extensions, which are skipped.

/// A parsed plain RTP packet (borrowing its payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rtp<'a> {
    /// Payload type.
    pub pt: u8,
    /// Marker bit.
    pub marker: bool,
    /// Sequence number.
    pub seq: u16,
    /// RTP timestamp.
    pub timestamp: u32,
    /// Sender SSRC.
    pub ssrc: u32,
    /// The payload, without padding.
    pub payload: &'a [u8],
}

/// Parses an RTP packet; `None` when it is not one (too short, version not 2, lengths that do
/// not fit).
pub fn parse(packet: &[u8]) -> Option<Rtp<'_>> {
    if packet.len() < 12 || packet[0] >> 6 != 2 {
        return None;
    }
    let padding = packet[0] & 0x20 != 0;
    let extension = packet[0] & 0x10 != 0;
    let csrcs = usize::from(packet[0] & 0x0f);
    let mut offset = 12 + 4 * csrcs;
    if extension {
        let ext = packet.get(offset..offset + 4)?;
        let words = usize::from(u16::from_be_bytes([ext[2], ext[3]]));
        offset += 4 + 4 * words;
    }
    let mut end = packet.len();
    if padding {
        let pad = usize::from(*packet.last()?);
        end = end.checked_sub(pad)?;
    }
    if offset > end {
        return None;
    }
    Some(Rtp {
        pt: packet[1] & 0x7f,
        marker: packet[1] & 0x80 != 0,
        seq: u16::from_be_bytes([packet[2], packet[3]]),
        timestamp: u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]),
        ssrc: u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]]),
        payload: &packet[offset..end],
    })
}

/// Serializes a plain RTP packet (no extensions, no padding).
pub fn serialize(rtp: &Rtp<'_>, csrcs: &[u32]) -> Vec<u8> {
    let csrcs = &csrcs[..csrcs.len().min(15)];
    let mut out = Vec::with_capacity(12 + 4 * csrcs.len() + rtp.payload.len());
    // `csrcs.len() <= 15` (sliced above), so it fits the 4-bit CC field.
    out.push(0x80 | csrcs.len() as u8);
    out.push((u8::from(rtp.marker) << 7) | (rtp.pt & 0x7f));
    out.extend_from_slice(&rtp.seq.to_be_bytes());
    out.extend_from_slice(&rtp.timestamp.to_be_bytes());
    out.extend_from_slice(&rtp.ssrc.to_be_bytes());
    for c in csrcs {
        out.extend_from_slice(&c.to_be_bytes());
    }
    out.extend_from_slice(rtp.payload);
    out
}

/// The header extension ids one receiver negotiated for what the fast egress writes
/// (`None`: not negotiated, not written). Transport-wide sequence numbers and abs-send-time
/// are never written: they belong to str0m's sender-side estimation, off on fast legs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EgressExtensions {
    /// `urn:ietf:params:rtp-hdrext:sdes:mid`.
    pub mid: Option<u8>,
    /// `urn:ietf:params:rtp-hdrext:ssrc-audio-level`.
    pub audio_level: Option<u8>,
    /// `urn:3gpp:video-orientation`.
    pub video_orientation: Option<u8>,
    /// `http://www.webrtc.org/experiments/rtp-hdrext/playout-delay`.
    pub playout_delay: Option<u8>,
}

/// One packet's header as the fast egress writes it for its receiver.
#[derive(Debug, Clone, Copy)]
pub struct EgressHeader<'a> {
    pub pt: u8,
    pub marker: bool,
    pub seq: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    /// The receiver's MID of the stream (written when negotiated and 1..=16 bytes, or in the
    /// two-byte form up to 255).
    pub mid: &'a [u8],
    /// RFC 6464's byte (V bit and level), as the sender sent it.
    pub audio_level: Option<u8>,
    /// The CVO byte.
    pub video_orientation: Option<u8>,
    /// The three playout-delay bytes (12-bit minimum and maximum, 10 ms units).
    pub playout_delay: Option<[u8; 3]>,
}

/// Appends the RTP header of `h` (no CSRCs) with the extensions `ids` names, in RFC 8285's
/// one-byte form when every id and value fits it, else the two-byte form. Returns its length.
pub fn write_egress_header(
    out: &mut Vec<u8>,
    h: &EgressHeader<'_>,
    ids: &EgressExtensions,
) -> usize {
    let start = out.len();
    let level = h.audio_level.map(|b| [b]);
    let cvo = h.video_orientation.map(|b| [b]);
    let mut elements: [(u8, &[u8]); 4] = [(0, &[]); 4];
    let mut n = 0;
    let candidates: [(Option<u8>, Option<&[u8]>); 4] = [
        (ids.mid, Some(h.mid)),
        (ids.audio_level, level.as_ref().map(|b| &b[..])),
        (ids.video_orientation, cvo.as_ref().map(|b| &b[..])),
        (ids.playout_delay, h.playout_delay.as_ref().map(|b| &b[..])),
    ];
    for (id, value) in candidates {
        if let (Some(id), Some(value)) = (id, value) {
            if id != 0 && !value.is_empty() && value.len() <= 255 {
                elements[n] = (id, value);
                n += 1;
            }
        }
    }
    let elements = &elements[..n];
    let x = if elements.is_empty() { 0 } else { 0x10 };
    out.push(0x80 | x);
    out.push((u8::from(h.marker) << 7) | (h.pt & 0x7f));
    out.extend_from_slice(&h.seq.to_be_bytes());
    out.extend_from_slice(&h.timestamp.to_be_bytes());
    out.extend_from_slice(&h.ssrc.to_be_bytes());
    if elements.is_empty() {
        return out.len() - start;
    }
    let one_byte = elements
        .iter()
        .all(|(id, v)| *id <= 14 && (1..=16).contains(&v.len()));
    let profile: u16 = if one_byte { 0xbede } else { 0x1000 };
    out.extend_from_slice(&profile.to_be_bytes());
    let words_at = out.len();
    out.extend_from_slice(&[0, 0]);
    let body = out.len();
    for (id, value) in elements {
        if one_byte {
            // `value.len()` is 1..=16 here.
            out.push((id << 4) | (value.len() as u8 - 1));
        } else {
            out.push(*id);
            // At most 255 (checked when collected).
            out.push(value.len() as u8);
        }
        out.extend_from_slice(value);
    }
    while !(out.len() - body).is_multiple_of(4) {
        out.push(0);
    }
    // At most 4 elements of 257 bytes: far below 2^16 words.
    let words = ((out.len() - body) / 4) as u16;
    out[words_at..words_at + 2].copy_from_slice(&words.to_be_bytes());
    out.len() - start
}

/// Extends 16-bit sequence numbers to 64 bits (RFC 3711 §3.3.1's rollover counter): each new
/// number is placed in the 2^16 window nearest the last one.
#[derive(Debug, Clone, Copy, Default)]
pub struct SeqExtender {
    last: Option<u64>,
}

impl SeqExtender {
    /// The extended value of `seq`.
    pub fn extend(&mut self, seq: u16) -> u64 {
        let Some(last) = self.last else {
            self.last = Some(u64::from(seq));
            return u64::from(seq);
        };
        let base = last & !0xffff;
        let candidates = [
            base.wrapping_sub(0x1_0000) | u64::from(seq),
            base | u64::from(seq),
            (base + 0x1_0000) | u64::from(seq),
        ];
        let ext = candidates
            .into_iter()
            .filter(|c| *c < (1 << 48))
            .min_by_key(|c| c.abs_diff(last))
            .unwrap_or(u64::from(seq));
        if ext > last {
            self.last = Some(ext);
        }
        ext
    }
}

/// The rewriting of one forwarded output stream: the receiver sees one continuous stream (its
/// own SSRC, contiguous sequence numbers, monotonic timestamps) whatever sources feed it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rewriter {
    source: Option<u64>,
    /// The current source's first (extended) sequence number since the switch to it, and the
    /// output sequence number it got.
    first: u64,
    base: u64,
    ts_delta: u32,
    last_out_seq: Option<u64>,
    last_out_ts: u32,
}

/// A source's sequence number this far from its first (or from the output's last) is no late
/// or reordered packet but a restart: it is taken as a switch.
const REWRITE_JUMP: u64 = 1 << 14;

impl Rewriter {
    /// Rewrites one packet from `source` (an SSRC, or any other key of a sender; extended
    /// `seq`, `ts`). Returns the output sequence number and timestamp, and whether the source
    /// changed (a switch: the caller asks the new source for a key frame); `None` for a packet
    /// of the current source older than its first one since the switch, which has no place
    /// in the output (its number would be one the previous source used, or below 1).
    pub fn rewrite(
        &mut self,
        source: u64,
        seq: u64,
        ts: u32,
        clock_step: u32,
    ) -> Option<(u64, u32, bool)> {
        let mut switched = self.source != Some(source);
        if !switched {
            if seq < self.first {
                if self.first - seq <= REWRITE_JUMP {
                    return None;
                }
                switched = true;
            } else {
                let out = self.base.saturating_add(seq - self.first);
                switched = self
                    .last_out_seq
                    .is_some_and(|l| out > l.saturating_add(REWRITE_JUMP));
            }
        }
        if switched {
            self.source = Some(source);
            // Continue right after what the receiver saw last; keep the output starting low
            // so that no rollover counter needs signalling (str0m's `RtpWrite` docs).
            self.base = self.last_out_seq.map_or(1, |s| s.saturating_add(1));
            self.first = seq;
            let next_ts = if self.last_out_seq.is_some() {
                self.last_out_ts.wrapping_add(clock_step)
            } else {
                ts
            };
            self.ts_delta = next_ts.wrapping_sub(ts);
        }
        let out_seq = self.base.checked_add(seq - self.first)?;
        let out_ts = ts.wrapping_add(self.ts_delta);
        if self.last_out_seq.is_none_or(|l| out_seq > l) {
            self.last_out_seq = Some(out_seq);
            self.last_out_ts = out_ts;
        }
        Some((out_seq, out_ts, switched))
    }
}

/// Rate limit of the key-frame requests forwarded to the sender of one stream. Every receiver
/// of a forwarded stream may ask for key frames (each PLI of a lossy or newly joined viewer);
/// passing each one on would make the sender encode key frame after key frame, raising its
/// bitrate for everyone because of one receiver. One request per interval is passed on: the key
/// frame it causes serves every receiver that asked meanwhile.
#[derive(Debug, Clone, Copy, Default)]
pub struct KeyframeGate {
    last: Option<std::time::Instant>,
}

impl KeyframeGate {
    /// Whether a request at `now` is passed on (and, if so, it is remembered).
    pub fn allow(&mut self, now: std::time::Instant, interval: std::time::Duration) -> bool {
        if self
            .last
            .is_some_and(|last| now.saturating_duration_since(last) < interval)
        {
            return false;
        }
        self.last = Some(now);
        true
    }

    /// Remembers a request made at `now` outside the gate (the plugin's own), so that receivers'
    /// requests right after it are absorbed.
    pub fn note(&mut self, now: std::time::Instant) {
        self.last = Some(now);
    }
}

/// RTCP payload-specific feedback (PSFB, PT 206) formats that ask for a key frame.
const PSFB: u8 = 206;
const FMT_PLI: u8 = 1;
const FMT_FIR: u8 = 4;

/// RTCP receiver report (RFC 3550 §6.4.2).
const RR: u8 = 201;

/// What a peer reported about one stream we send it, as RFC 3550 report-block fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceptionReport {
    /// The stream (our SSRC toward the peer).
    pub source: u32,
    /// Fraction lost since the previous report, in 1/256.
    pub fraction_lost: u8,
    /// Packets lost in all (24 bits on the wire; larger counts saturate).
    pub cumulative_lost: u32,
    /// Extended highest sequence number received.
    pub highest_seq: u32,
    /// Interarrival jitter, RTP timestamp units.
    pub jitter: u32,
}

/// A receiver report with one block, reporter SSRC 0 (the host speaks for the peer). LSR and
/// DLSR are 0: round-trip time is the host's business.
pub fn receiver_report(report: &ReceptionReport) -> Vec<u8> {
    let mut out = Vec::with_capacity(32);
    out.push(0x80 | 1);
    out.push(RR);
    out.extend_from_slice(&7u16.to_be_bytes());
    out.extend_from_slice(&0u32.to_be_bytes());
    out.extend_from_slice(&report.source.to_be_bytes());
    let lost = report.cumulative_lost.min(0x7f_ffff);
    out.push(report.fraction_lost);
    out.extend_from_slice(&lost.to_be_bytes()[1..]);
    out.extend_from_slice(&report.highest_seq.to_be_bytes());
    out.extend_from_slice(&report.jitter.to_be_bytes());
    out.extend_from_slice(&[0; 8]);
    out
}

/// A Picture Loss Indication (RFC 4585 §6.3.1) from `sender` about `media`.
pub fn pli(sender: u32, media: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(12);
    out.push(0x80 | FMT_PLI);
    out.push(PSFB);
    out.extend_from_slice(&2u16.to_be_bytes());
    out.extend_from_slice(&sender.to_be_bytes());
    out.extend_from_slice(&media.to_be_bytes());
    out
}

/// Calls `f(pt, fmt, packet)` for each packet of a compound RTCP packet (its whole length as
/// its header says, padding included; at least 4 bytes). A malformed packet ends the walk;
/// what was read before stands.
pub fn for_each_rtcp(mut packet: &[u8], mut f: impl FnMut(u8, u8, &[u8])) {
    while packet.len() >= 4 && packet[0] >> 6 == 2 {
        let words = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
        let len = 4 + 4 * words;
        let Some(body) = packet.get(..len) else {
            break;
        };
        f(packet[1], packet[0] & 0x1f, body);
        packet = &packet[len..];
    }
}

/// The media SSRCs of the key-frame requests (PLI, and FIR entries) in a compound RTCP
/// packet. Malformed packets end the walk; what was read before is kept.
pub fn keyframe_requests(packet: &[u8]) -> Vec<u32> {
    let mut out = Vec::new();
    for_each_rtcp(packet, |pt, fmt, body| {
        let len = body.len();
        if pt == PSFB && fmt == FMT_PLI && len >= 12 {
            out.push(u32::from_be_bytes([body[8], body[9], body[10], body[11]]));
        } else if pt == PSFB && fmt == FMT_FIR && len >= 20 {
            // FIR entries (8 bytes each) follow the 12-byte header; the media SSRC field is 0.
            for entry in body[12..].chunks_exact(8) {
                out.push(u32::from_be_bytes([entry[0], entry[1], entry[2], entry[3]]));
            }
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtp_round_trips_and_skips_extensions_and_padding() {
        let p = Rtp {
            pt: 96,
            marker: true,
            seq: 65535,
            timestamp: 90_000,
            ssrc: 0xdead_beef,
            payload: b"frame",
        };
        let bytes = serialize(&p, &[7]);
        assert_eq!(parse(&bytes), Some(p));
        // With a one-word extension and two bytes of padding.
        let mut ext = vec![0x80 | 0x10 | 0x20, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2];
        ext.extend_from_slice(&[0xbe, 0xde, 0, 1, 0x10, 0xff, 0, 0]);
        ext.extend_from_slice(b"abc");
        ext.extend_from_slice(&[0, 2]);
        assert_eq!(parse(&ext).unwrap().payload, b"abc");
        assert_eq!(parse(&[0x80, 96, 0]), None);
        assert_eq!(parse(&[0x8f; 20]), None, "15 CSRCs do not fit");
    }

    #[test]
    fn egress_headers_carry_the_receivers_extension_ids() {
        let h = EgressHeader {
            pt: 96,
            marker: true,
            seq: 7,
            timestamp: 90_000,
            ssrc: 0xdead_beef,
            mid: b"v1",
            audio_level: None,
            video_orientation: Some(3),
            playout_delay: Some([0, 0x10, 0x64]),
        };
        let ids = EgressExtensions {
            mid: Some(9),
            audio_level: Some(1),
            video_orientation: Some(13),
            playout_delay: None,
        };
        let mut out = vec![0xaa];
        let len = write_egress_header(&mut out, &h, &ids);
        let hdr = &out[1..];
        assert_eq!(len, hdr.len());
        assert_eq!(
            &hdr[..12],
            &[
                0x90,
                0x80 | 96,
                0,
                7,
                0,
                1,
                0x5f,
                0x90,
                0xde,
                0xad,
                0xbe,
                0xef
            ]
        );
        // MID (id 9, 2 bytes), CVO (id 13, 1 byte), padding to a word; no audio level value.
        assert_eq!(
            &hdr[12..],
            &[0xbe, 0xde, 0, 2, 0x91, b'v', b'1', 0xd0, 3, 0, 0, 0]
        );
        let parsed = parse(&out[1..]).unwrap();
        assert_eq!(
            (parsed.seq, parsed.ssrc, parsed.payload.len()),
            (7, 0xdead_beef, 0)
        );

        // An id above 14: the two-byte form.
        let ids = EgressExtensions {
            mid: Some(15),
            ..EgressExtensions::default()
        };
        let mut out = Vec::new();
        write_egress_header(&mut out, &h, &ids);
        assert_eq!(&out[12..], &[0x10, 0x00, 0, 1, 15, 2, b'v', b'1']);
        // Nothing negotiated: no extension block at all.
        let mut out = Vec::new();
        assert_eq!(
            write_egress_header(&mut out, &h, &EgressExtensions::default()),
            12
        );
        assert_eq!(out[0], 0x80);
    }

    #[test]
    fn sequence_numbers_extend_across_rollover_and_reordering() {
        let mut x = SeqExtender::default();
        assert_eq!(x.extend(65534), 65534);
        assert_eq!(x.extend(65535), 65535);
        assert_eq!(x.extend(1), 65537);
        assert_eq!(
            x.extend(65533),
            65533,
            "late packet from before the rollover"
        );
        assert_eq!(x.extend(2), 65538);
    }

    #[test]
    fn a_switch_keeps_the_output_contiguous() {
        let mut r = Rewriter::default();
        assert_eq!(r.rewrite(1, 5000, 100, 3000), Some((1, 100, true)));
        assert_eq!(r.rewrite(1, 5001, 3100, 3000), Some((2, 3100, false)));
        let (seq, ts, switched) = r.rewrite(2, 90, 777, 3000).unwrap();
        assert!(switched);
        assert_eq!((seq, ts), (3, 6100));
        assert_eq!(r.rewrite(2, 91, 3777, 3000).unwrap().0, 4);
    }

    #[test]
    fn a_packet_from_before_a_sources_first_is_dropped() {
        // Review #1: 4998 after 5000 mapped to u64::MAX (and overflowed debug builds at the
        // next switch).
        let mut r = Rewriter::default();
        assert_eq!(r.rewrite(1, 5000, 100, 3000), Some((1, 100, true)));
        assert_eq!(r.rewrite(1, 4998, 0, 3000), None);
        assert_eq!(r.rewrite(1, 4999, 0, 3000), None);
        assert_eq!(r.rewrite(1, 5002, 6100, 3000), Some((3, 6100, false)));
        assert_eq!(
            r.rewrite(1, 5001, 3100, 3000),
            Some((2, 3100, false)),
            "reordered"
        );
        // After a switch the new source's earlier packets would land on the old one's.
        assert_eq!(r.rewrite(2, 90, 0, 3000).map(|o| o.0), Some(4));
        assert_eq!(r.rewrite(2, 89, 0, 3000), None);
        assert_eq!(r.rewrite(2, 91, 0, 3000).map(|o| o.0), Some(5));
        // A restart of the source's numbering far back or far ahead: a switch, still
        // contiguous.
        assert_eq!(r.rewrite(3, 50_000, 0, 3000).map(|o| o.0), Some(6));
        assert_eq!(
            r.rewrite(3, 10, 0, 3000).map(|o| (o.0, o.2)),
            Some((7, true))
        );
        let far = 10 + REWRITE_JUMP + 100;
        assert_eq!(
            r.rewrite(3, far, 0, 3000).map(|o| (o.0, o.2)),
            Some((8, true))
        );
        assert_eq!(r.rewrite(3, u64::MAX, 0, 3000).map(|o| o.0), Some(9));
        assert_eq!(r.rewrite(3, u64::MAX - 1, 0, 3000), None);
    }

    #[test]
    fn forwarded_keyframe_requests_are_rate_limited() {
        use std::time::{Duration, Instant};
        let interval = Duration::from_millis(500);
        let t0 = Instant::now();
        let mut gate = KeyframeGate::default();
        assert!(gate.allow(t0, interval));
        assert!(!gate.allow(t0 + Duration::from_millis(10), interval));
        assert!(!gate.allow(t0 + Duration::from_millis(499), interval));
        assert!(gate.allow(t0 + Duration::from_millis(500), interval));
        gate.note(t0 + Duration::from_millis(900));
        assert!(!gate.allow(t0 + Duration::from_millis(1000), interval));
        assert!(gate.allow(t0 + Duration::from_millis(1400), interval));
    }

    #[test]
    fn keyframe_requests_are_found_in_compound_rtcp() {
        let mut compound = vec![0x80, 201, 0, 1, 0, 0, 0, 9]; // an empty RR
        compound.extend(pli(9, 0x1234));
        compound.extend([
            0x80 | 4,
            206,
            0,
            4,
            0,
            0,
            0,
            9,
            0,
            0,
            0,
            0,
            0,
            0,
            0x56,
            0x78,
            1,
            0,
            0,
            0,
        ]);
        assert_eq!(keyframe_requests(&compound), vec![0x1234, 0x5678]);
        assert!(
            keyframe_requests(&[0x80, 206, 0, 9]).is_empty(),
            "truncated"
        );
    }

    #[test]
    fn a_receiver_report_carries_one_block_and_asks_for_no_key_frame() {
        let rr = receiver_report(&ReceptionReport {
            source: 0xdead_beef,
            fraction_lost: 26,
            cumulative_lost: 0x0100_0000,
            highest_seq: 70_000,
            jitter: 90,
        });
        assert_eq!(rr.len(), 32, "header, reporter, one 24-byte block");
        assert_eq!(&rr[..4], &[0x81, 201, 0, 7]);
        assert_eq!(&rr[8..12], &0xdead_beefu32.to_be_bytes());
        assert_eq!(rr[12], 26);
        assert_eq!(
            &rr[13..16],
            &[0x7f, 0xff, 0xff],
            "cumulative saturates at 24 bits"
        );
        assert_eq!(&rr[16..20], &70_000u32.to_be_bytes());
        assert_eq!(&rr[20..24], &90u32.to_be_bytes());
        assert!(keyframe_requests(&rr).is_empty());
    }
}
