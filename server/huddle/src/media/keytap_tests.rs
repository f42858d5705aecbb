//! The key tap against str0m on the wire, in virtual time and without sockets: a leg built as
//! the engine builds it ([`sdp::new_leg`], ICE-lite, answering) and a str0m peer (full ICE,
//! offering, DTLS client), both tapped, wired back to back. After DTLS, SRTP contexts of our own
//! built from each side's captured material must open what str0m sends (RTP and RTCP) and seal
//! a packet into exactly the bytes str0m put on the wire for it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::change::SdpAnswer;
use str0m::crypto::dtls::SrtpProfile;
use str0m::media::{Direction, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpWrite, SeqNo};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};

use super::keytap::{self, KeySlot};
use super::sdp::{self, CodecName, LegSettings};
use super::srtp::{LegSrtp, SrtpTx};

const LEG: &str = "127.0.0.1:40000";
const PEER: &str = "127.0.0.1:50000";

/// One side of the pair.
struct Side {
    rtc: Rtc,
    addr: SocketAddr,
    keys: Arc<KeySlot>,
    /// `Event::Connected` seen, and whether the keys were in the slot by then.
    connected: Option<bool>,
    /// Every datagram this side sent, in order.
    wire: Vec<Vec<u8>>,
    /// Payloads of the RTP packets str0m handed up, with their extended sequence numbers.
    rtp: Vec<(u64, Vec<u8>)>,
    timeout: Instant,
}

impl Side {
    fn new(rtc: Rtc, addr: &str, keys: Arc<KeySlot>, now: Instant) -> Side {
        Side {
            rtc,
            addr: addr.parse().unwrap(),
            keys,
            connected: None,
            wire: Vec::new(),
            rtp: Vec::new(),
            timeout: now,
        }
    }

    /// Polls until `Timeout`; returns what it transmitted.
    fn poll(&mut self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        loop {
            match self.rtc.poll_output().expect("str0m runs") {
                Output::Timeout(t) => {
                    self.timeout = t;
                    return out;
                }
                Output::Transmit(t) => {
                    self.wire.push(t.contents.to_vec());
                    out.push(t.contents.to_vec());
                }
                Output::Event(Event::Connected) => {
                    self.connected = Some(self.keys.generation() > 0);
                }
                Output::Event(Event::RtpPacket(p)) => {
                    self.rtp.push((*p.seq_no, p.payload.to_vec()))
                }
                Output::Event(_) => {}
            }
        }
    }
}

/// The leg (as the engine builds it) and a str0m peer offering one video m-line, the peer's
/// mid, both tapped.
struct Pair {
    leg: Side,
    peer: Side,
    mid: Mid,
    now: Instant,
}

impl Pair {
    fn new() -> Pair {
        super::install_crypto();
        let now = Instant::now();
        let settings = LegSettings {
            candidate: LEG.parse().unwrap(),
            codecs: vec![CodecName::Vp8],
            bandwidth_estimation: false,
        };
        let (mut leg, _, leg_keys) = sdp::new_leg(&settings, now);
        let config = RtcConfig::new()
            .set_rtp_mode(true)
            .clear_codecs()
            .enable_vp8(true);
        let (mut peer, peer_keys) = keytap::build(config, now);
        peer.add_local_candidate(Candidate::host(PEER.parse().unwrap(), "udp").unwrap());
        let mut change = peer.sdp_api();
        let mid = change.add_media(MediaKind::Video, Direction::SendRecv, None, None, None);
        let (offer, pending) = change.apply().unwrap();
        let offer = sdp::check_offer(offer.to_sdp_string().as_bytes()).unwrap();
        let answer = sdp::answer(&mut leg, offer).unwrap();
        peer.sdp_api()
            .accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap())
            .unwrap();
        Pair {
            leg: Side::new(leg, LEG, leg_keys, now),
            peer: Side::new(peer, PEER, peer_keys, now),
            mid,
            now,
        }
    }

    /// Delivers datagrams both ways until neither side sends, then moves the clock to the
    /// earlier timeout; `turns` times.
    fn run(&mut self, turns: usize) {
        for _ in 0..turns {
            let mut to_peer = self.leg.poll();
            let mut to_leg = self.peer.poll();
            while !to_peer.is_empty() || !to_leg.is_empty() {
                let peer_sent = deliver(&mut self.peer, self.leg.addr, to_peer, self.now);
                to_peer = deliver(&mut self.leg, self.peer.addr, to_leg, self.now);
                to_leg = peer_sent;
            }
            self.now = self.now.max(self.leg.timeout.min(self.peer.timeout));
            for side in [&mut self.leg, &mut self.peer] {
                side.rtc.handle_input(Input::Timeout(self.now)).unwrap();
            }
        }
    }

    fn connect(&mut self) {
        for _ in 0..200 {
            if self.leg.connected.is_some() && self.peer.connected.is_some() {
                return;
            }
            self.run(1);
        }
        panic!("the pair did not connect");
    }
}

/// Hands `datagrams` to `to`; returns what it sent in reply.
fn deliver(to: &mut Side, from: SocketAddr, datagrams: Vec<Vec<u8>>, now: Instant) -> Vec<Vec<u8>> {
    let mut sent = Vec::new();
    for d in datagrams {
        let receive = Receive::new(Protocol::Udp, from, to.addr, &d).unwrap();
        to.rtc.handle_input(Input::Receive(now, receive)).unwrap();
        // RTP mode holds one received packet for the next poll: drain before the next input.
        sent.extend(to.poll());
    }
    sent
}

/// RTP or RTCP (RFC 7983: first byte 128..=191).
fn is_srtp(d: &[u8]) -> bool {
    super::driver::srtp_kind(d).is_some()
}

/// RTCP under RFC 5761's rule (payload type 192..=223 in the second byte).
fn is_rtcp(d: &[u8]) -> bool {
    super::driver::srtp_kind(d) == Some(true)
}

fn write_rtp(side: &mut Side, mid: Mid, seq: u64, now: Instant, payload: &[u8]) {
    let pt = side.rtc.codec_config().params()[0].pt();
    let mut api = side.rtc.direct_api();
    let tx = api.stream_tx_by_mid(mid, None).expect("a send stream");
    tx.write_rtp(
        RtpWrite::new(pt, SeqNo::from(seq), 90 * seq as u32, now, payload.to_vec())
            .marker(true)
            .nackable(true),
    );
    // str0m releases a write on its next input.
    side.rtc.handle_input(Input::Timeout(now)).unwrap();
}

#[test]
fn both_sides_capture_the_same_keys_in_opposite_roles_before_connected() {
    let mut pair = Pair::new();
    pair.connect();
    assert_eq!(
        pair.leg.connected,
        Some(true),
        "keys in the slot at Connected"
    );
    assert_eq!(pair.peer.connected, Some(true));
    let leg = pair.leg.keys.take().expect("the leg's keys");
    let peer = pair.peer.keys.take().expect("the peer's keys");
    // str0m's answer to an offer's `actpass` is passive: the peer is the DTLS client.
    assert!(!leg.dtls_client && peer.dtls_client, "{leg:?} {peer:?}");
    assert_eq!(leg.profile, peer.profile);
    assert_eq!(leg.material, peer.material, "one exporter secret");
    // dimpl prefers AES-256-GCM, and both ends are dimpl.
    assert_eq!(leg.profile, SrtpProfile::AEAD_AES_256_GCM);
    assert_eq!(leg.material.len(), leg.profile.keying_material_len());
    assert_eq!((leg.generation, pair.leg.keys.generation()), (1, 1));
}

/// Our contexts for one side, from what its tap captured.
fn own(side: &Side) -> LegSrtp {
    let keys = side.keys.take().expect("captured keys");
    let profile =
        crate::media::srtp::SrtpProfile::from_dtls(keys.profile).expect("a profile we implement");
    LegSrtp::from_keying_material(profile, &keys.material, keys.dtls_client).unwrap()
}

/// The SRTP (not SRTCP) datagrams of a wire.
fn rtp_of(wire: &[Vec<u8>]) -> Vec<Vec<u8>> {
    wire.iter()
        .filter(|d| is_srtp(d) && !is_rtcp(d))
        .cloned()
        .collect()
}

fn srtcp_of(wire: &[Vec<u8>]) -> Vec<Vec<u8>> {
    wire.iter().filter(|d| is_rtcp(d)).cloned().collect()
}

fn payload(seq: u64) -> Vec<u8> {
    format!("frame {seq}, some bytes to encrypt").into_bytes()
}

#[test]
fn our_contexts_open_what_str0m_sends_and_seal_exactly_what_it_seals() {
    let mut pair = Pair::new();
    pair.connect();
    let mut leg = own(&pair.leg);
    let mut peer = own(&pair.peer);
    let mid = pair.mid;

    // (a) The peer sends: our leg-side receive context opens every packet str0m's leg opened.
    let first = 1_000u64;
    for seq in first..first + 20 {
        write_rtp(&mut pair.peer, mid, seq, pair.now, &payload(seq));
        pair.run(1);
    }
    let heard: Vec<u64> = pair.leg.rtp.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(
        heard,
        (first..first + 20).collect::<Vec<_>>(),
        "str0m got all"
    );
    let sent = rtp_of(&pair.peer.wire);
    assert_eq!(sent.len(), 20, "one datagram per packet");
    for (datagram, (seq, str0m_payload)) in sent.iter().zip(&pair.leg.rtp) {
        let mut buf = datagram.clone();
        let opened = leg
            .rx
            .unprotect_rtp(&mut buf)
            .expect("our rx opens str0m's SRTP");
        assert_eq!(opened.index, *seq);
        assert_eq!(&buf[opened.header_len..opened.len], &str0m_payload[..]);
        assert_eq!(&buf[opened.header_len..opened.len], &payload(*seq)[..]);
    }

    // (b) The leg sends, across a rollover of the sequence number (ROC 0 to 1): str0m's bytes
    // are exactly what our transmit context makes of the same plaintext and index.
    let first = 65_530u64;
    for seq in first..first + 12 {
        write_rtp(&mut pair.leg, mid, seq, pair.now, &payload(seq));
        pair.run(1);
    }
    let heard: Vec<u64> = pair.peer.rtp.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(heard.len(), 12, "the peer got all: {heard:?}");
    let sent = rtp_of(&pair.leg.wire);
    assert_eq!(sent.len(), 12);
    let mut template = Vec::new();
    for (i, datagram) in sent.iter().enumerate() {
        let index = first + i as u64;
        let mut plain = datagram.clone();
        let opened = peer.rx.unprotect_rtp(&mut plain).expect("opens");
        assert_eq!(opened.index, index, "ROC and sequence number as written");
        assert_eq!(&plain[opened.header_len..opened.len], &payload(index)[..]);
        template = plain[..opened.header_len].to_vec();
        plain.truncate(opened.len);
        leg.tx.protect_rtp_vec(&mut plain, index).unwrap();
        assert_eq!(
            &plain, datagram,
            "packet {i}: our SRTP equals str0m's, byte for byte"
        );
    }

    // Step 2's premise: packets we build and seal ourselves, on the SSRC str0m sends on,
    // interleaved with str0m's own, are taken by a receiver like str0m's (no IV is reused:
    // each extended sequence number is sealed by one of the two only).
    let last = first + 11;
    assert!(
        peer.rx.unprotect_rtp(&mut sent[11].clone()).is_err(),
        "already seen: refused as a replay"
    );
    for seq in last + 1..last + 6 {
        let mut packet = template.clone();
        packet[2..4].copy_from_slice(&(seq as u16).to_be_bytes());
        packet[4..8].copy_from_slice(&(90 * seq as u32).to_be_bytes());
        packet.extend_from_slice(&payload(seq));
        leg.tx.protect_rtp_vec(&mut packet, seq).unwrap();
        deliver(&mut pair.peer, pair.leg.addr, vec![packet], pair.now);
    }
    write_rtp(&mut pair.leg, mid, last + 6, pair.now, &payload(last + 6));
    pair.run(1);
    let tail: Vec<(u64, Vec<u8>)> = pair.peer.rtp[12..].to_vec();
    let want: Vec<(u64, Vec<u8>)> = (last + 1..=last + 6).map(|s| (s, payload(s))).collect();
    assert_eq!(tail, want, "ours, then str0m's, on one SSRC");

    // SRTCP both ways: a few seconds of reports (SR, RR, TWCC, NACK-free).
    let until = pair.now + Duration::from_secs(6);
    while pair.now < until {
        pair.run(1);
    }
    let peer_rtcp = srtcp_of(&pair.peer.wire);
    assert!(
        peer_rtcp.len() >= 3,
        "the peer reported: {}",
        peer_rtcp.len()
    );
    for datagram in &peer_rtcp {
        let mut buf = datagram.clone();
        let opened = leg
            .rx
            .unprotect_rtcp(&mut buf)
            .expect("our rx opens str0m's SRTCP");
        assert!(opened.encrypted);
        assert!((200..=206).contains(&buf[1]), "RTCP within");
    }
    // str0m counts its SRTCP index from 0 per direction, as our transmit context does: seal
    // every report the leg sent, in order, and compare.
    let leg_rtcp = srtcp_of(&pair.leg.wire);
    assert!(leg_rtcp.len() >= 3, "the leg reported: {}", leg_rtcp.len());
    // Our own counter (`protect_rtcp`) seals only for an SSRC reserved for our own RTCP, never
    // str0m's: str0m's packets are sealed at the index str0m counted, k.
    let tx: &SrtpTx = &leg.tx;
    for (k, datagram) in leg_rtcp.iter().enumerate() {
        let mut plain = datagram.clone();
        let opened = peer.rx.unprotect_rtcp(&mut plain).expect("opens");
        assert_eq!(opened.index as usize, k, "str0m's SRTCP index");
        let mut buf = plain[..opened.len].to_vec();
        buf.resize(opened.len + datagram.len() - opened.len, 0);
        let n = tx.protect_rtcp_at(&mut buf, opened.len, k as u32).unwrap();
        assert_eq!(
            &buf[..n],
            &datagram[..],
            "report {k}: our SRTCP equals str0m's"
        );
    }
    // The SR rewrite's tools (step 2): our transmit keys open the leg's own outgoing SRTCP
    // before it leaves, and re-seal it at str0m's index into the same bytes.
    for (k, datagram) in leg_rtcp.iter().enumerate() {
        let mut own = datagram.clone();
        let opened = leg.tx.open_own_rtcp(&mut own).expect("our own SRTCP opens");
        assert_eq!(opened.index as usize, k);
        let mut again = datagram.clone();
        assert!(
            peer.rx.unprotect_rtcp(&mut again).is_err(),
            "a replay to the peer's window is refused"
        );
        own.truncate(opened.len);
        own.resize(datagram.len(), 0);
        let n = leg
            .tx
            .protect_rtcp_at(&mut own, opened.len, opened.index)
            .unwrap();
        assert_eq!(
            &own[..n],
            &datagram[..],
            "report {k} re-sealed at its index"
        );
    }
}
