//! The fast egress against str0m peers on loopback (driver.rs module docs, "Fast egress"): a
//! running [`MediaEngine`] without bandwidth estimation forwards a str0m sender's video into a
//! str0m receiver's leg, sealing it itself.
//!
//! What must hold: the receiver takes every packet as ordinary RTP under its leg's SSRC, with
//! the MID and the kept extensions under the receiver's own extension ids; packets the driver
//! leaves out (its debug loss hook) come back through the receiver's NACKs, as RTX; the
//! receiver's sender reports pair an RTP time with an NTP time the way the sender's clock
//! does.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use huddle_sdk::HangupReason;
use str0m::change::SdpAnswer;
use str0m::format::{Codec, FormatParams};
use str0m::media::{Direction, ExtensionValues, Frequency, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{Extension, RtpWrite, SeqNo, VideoOrientation};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::forward_tests::{answered_ssrc, engine_on_loopback};
use super::{MediaEngine, MediaEvents};

struct Quiet;

impl MediaEvents for Quiet {
    fn ready(&self, _: u64) {}
    fn rtp(&self, _: u64, _: &str, _: Vec<u8>) {}
    fn rtcp(&self, _: u64, _: Vec<u8>) {}
    fn hangup(&self, _: u64, _: HangupReason) {}
    fn bitrate(&self, _: u64, _: u64) {}
}

/// One RTP packet as the receiving str0m peer handed it up.
#[derive(Debug, Clone)]
struct Got {
    ssrc: u32,
    seq: u64,
    ts: u32,
    payload: Vec<u8>,
    mid: Option<Mid>,
    orientation: Option<VideoOrientation>,
    transport_cc: bool,
    /// The latest sender report of the stream: (NTP time, RTP time's low 32 bits).
    sr: Option<(SystemTime, u32)>,
}

#[derive(Debug)]
enum PeerEvent {
    Connected,
    Rtp(Box<Got>),
}

/// Frame `seq` to send, with its RTP time and the orientation extension.
struct Frame {
    seq: u64,
    ts: u32,
    payload: Vec<u8>,
}

struct Peer {
    events: mpsc::UnboundedReceiver<PeerEvent>,
    frames: mpsc::UnboundedSender<Frame>,
    mid: Mid,
    /// The SSRCs of the RTP datagrams that reached the peer (in the clear in SRTP), whether
    /// str0m accepted them or not.
    wire_ssrcs: WireSsrcs,
}

type WireSsrcs = Arc<std::sync::Mutex<std::collections::BTreeSet<u32>>>;

impl Peer {
    /// Offers one video m-line (VP8 with RTX) in `direction`; `config` is the peer's
    /// `RtcConfig` (its extension ids).
    async fn call(
        engine: &MediaEngine,
        config: RtcConfig,
        direction: Direction,
    ) -> (Peer, u64, String) {
        Peer::call_with(engine, config.clear_codecs().enable_vp8(true), direction).await
    }

    /// As [`Peer::call`], with the codecs `config` has.
    async fn call_with(
        engine: &MediaEngine,
        config: RtcConfig,
        direction: Direction,
    ) -> (Peer, u64, String) {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let local = socket.local_addr().unwrap();
        let mut rtc = config
            .set_rtp_mode(true)
            .set_stats_interval(None)
            .build(Instant::now());
        rtc.add_local_candidate(Candidate::host(local, "udp").unwrap());
        let mut change = rtc.sdp_api();
        let mid = change.add_media(MediaKind::Video, direction, None, None, None);
        let (offer, pending) = change.apply().unwrap();
        let (session, answer) = engine
            .answer(1, Arc::new(Quiet), None, offer.to_sdp_string().as_bytes())
            .unwrap();
        rtc.sdp_api()
            .accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap())
            .unwrap();
        // str0m NACKs only where RTX is negotiated; a browser NACKs wherever `nack` feedback
        // is: be the browser.
        if let Some(rx) = rtc.direct_api().stream_rx_by_mid(mid, None) {
            rx.suppress_nack(false);
        }
        let (event_tx, events) = mpsc::unbounded_channel();
        let (frames, frame_rx) = mpsc::unbounded_channel();
        let wire_ssrcs = WireSsrcs::default();
        tokio::spawn(drive(
            rtc,
            socket,
            local,
            mid,
            event_tx,
            frame_rx,
            wire_ssrcs.clone(),
        ));
        (
            Peer {
                events,
                frames,
                mid,
                wire_ssrcs,
            },
            session,
            answer,
        )
    }

    async fn next(&mut self, what: &str) -> PeerEvent {
        tokio::time::timeout(Duration::from_secs(10), self.events.recv())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
            .expect("peer task alive")
    }

    async fn connected(&mut self) {
        while !matches!(self.next("the peer to connect").await, PeerEvent::Connected) {}
    }

    fn send(&self, seq: u64, ts: u32) {
        let _ = self.frames.send(Frame {
            seq,
            ts,
            payload: format!("frame {seq}").into_bytes(),
        });
    }
}

async fn drive(
    mut rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    mid: Mid,
    events: mpsc::UnboundedSender<PeerEvent>,
    mut frames: mpsc::UnboundedReceiver<Frame>,
    wire_ssrcs: WireSsrcs,
) {
    let mut buf = vec![0u8; 2048];
    loop {
        let timeout = loop {
            match rtc.poll_output() {
                Ok(Output::Transmit(t)) => {
                    let _ = socket.try_send_to(&t.contents, t.destination);
                }
                Ok(Output::Timeout(t)) => break t,
                Ok(Output::Event(Event::Connected)) => {
                    let _ = events.send(PeerEvent::Connected);
                }
                Ok(Output::Event(Event::RtpPacket(p))) => {
                    let _ = events.send(PeerEvent::Rtp(Box::new(Got {
                        ssrc: *p.header.ssrc,
                        seq: *p.seq_no,
                        ts: p.header.timestamp,
                        payload: p.payload.to_vec(),
                        mid: p.header.ext_vals.mid,
                        orientation: p.header.ext_vals.video_orientation,
                        transport_cc: p.header.ext_vals.transport_cc.is_some(),
                        sr: p
                            .last_sender_info
                            .map(|i| (i.ntp_time, i.rtp_time.numer() as u32)),
                    })));
                }
                Ok(Output::Event(_)) => {}
                Err(_) => return,
            }
        };
        if !rtc.is_alive() {
            return;
        }
        tokio::select! {
            r = socket.recv_from(&mut buf) => {
                let Ok((n, source)) = r else { return };
                let datagram = &buf[..n];
                // RTP (RFC 7983, RFC 5761): its SSRC.
                if n >= 12 && super::driver::srtp_kind(datagram) == Some(false) {
                    let ssrc = u32::from_be_bytes([datagram[8], datagram[9], datagram[10], datagram[11]]);
                    wire_ssrcs.lock().unwrap().insert(ssrc);
                }
                if let Ok(receive) = Receive::new(Protocol::Udp, source, local, &buf[..n]) {
                    let _ = rtc.handle_input(Input::Receive(Instant::now(), receive));
                }
            }
            frame = frames.recv() => {
                let Some(Frame { seq, ts, payload }) = frame else { return };
                let now = Instant::now();
                let pt = rtc.codec_config().params().first().map(|p| p.pt());
                if let (Some(pt), Some(tx)) = (pt, rtc.direct_api().stream_tx_by_mid(mid, None)) {
                    let ext = ExtensionValues {
                        video_orientation: Some(VideoOrientation::Deg90),
                        ..ExtensionValues::default()
                    };
                    tx.write_rtp(
                        RtpWrite::new(pt, SeqNo::from(seq), ts, now, payload)
                            .marker(true)
                            .ext_vals(ext)
                            .nackable(true),
                    );
                }
                let _ = rtc.handle_input(Input::Timeout(now));
            }
            () = tokio::time::sleep_until(timeout.into()) => {
                let _ = rtc.handle_input(Input::Timeout(Instant::now()));
            }
        }
    }
}

async fn start() -> (MediaEngine, super::EngineTask) {
    engine_on_loopback(false, true).await
}

/// A sender and a receiver whose extension ids differ from the sender's (and from str0m's
/// defaults), both connected, the sender's video forwarded into the receiver's leg.
async fn forwarded_pair(engine: &MediaEngine) -> (Peer, Peer, u32) {
    forwarded_pair_with(engine, true).await
}

/// As [`forwarded_pair`]; `rtx`: the receiver offers VP8 with RTX (else without).
async fn forwarded_pair_with(engine: &MediaEngine, rtx: bool) -> (Peer, Peer, u32) {
    let (mut sender, src, src_answer) =
        Peer::call(engine, RtcConfig::new(), Direction::SendOnly).await;
    let mut receiver_config = RtcConfig::new()
        .clear_extension_map()
        .set_extension(7, Extension::RtpMid)
        .set_extension(5, Extension::VideoOrientation)
        .set_extension(3, Extension::TransportSequenceNumber)
        .set_extension(12, Extension::AbsoluteSendTime)
        .clear_codecs();
    if rtx {
        receiver_config = receiver_config.enable_vp8(true);
    } else {
        receiver_config.codec_config().add_config(
            96.into(),
            None,
            Codec::Vp8,
            Frequency::NINETY_KHZ,
            None,
            FormatParams::default(),
        );
    }
    let (mut receiver, dst, dst_answer) =
        Peer::call_with(engine, receiver_config, Direction::RecvOnly).await;
    sender.connected().await;
    receiver.connected().await;
    let mid = |answer: &str| super::mids_of(answer)[0].to_string();
    engine
        .forward(1, src, &mid(&src_answer), dst, &mid(&dst_answer))
        .unwrap();
    (sender, receiver, answered_ssrc(&dst_answer))
}

/// Sends from `seq` until the receiver gets a packet (the forward and the sender's first
/// packets reach the driver by different ways); returns the next sequence number.
async fn until_flowing(sender: &Peer, receiver: &mut Peer, mut seq: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < deadline, "nothing was forwarded");
        sender.send(seq, 3000 * seq as u32);
        seq += 1;
        if let Ok(Some(PeerEvent::Rtp(_))) =
            tokio::time::timeout(Duration::from_millis(50), receiver.events.recv()).await
        {
            return seq;
        }
    }
}

fn frame_number(payload: &[u8]) -> Option<u64> {
    std::str::from_utf8(payload)
        .ok()?
        .strip_prefix("frame ")?
        .parse()
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_stream_leaves_sealed_by_the_driver_with_the_receivers_extension_ids() {
    let (engine, task) = start().await;
    let (sender, mut receiver, dst_ssrc) = forwarded_pair(&engine).await;
    let seq = until_flowing(&sender, &mut receiver, 1).await;
    let count = 60;
    for s in seq..seq + count {
        sender.send(s, 3000 * s as u32);
        // Spread as a stream is (the pace, not a wait for an event): packets of one driver
        // turn right after an anchor follow it through str0m.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut got = Vec::new();
    while got.len() < count as usize {
        if let PeerEvent::Rtp(p) = receiver.next("the forwarded burst").await {
            if frame_number(&p.payload).is_some_and(|n| n >= seq) {
                got.push(*p);
            }
        }
    }
    for (i, p) in got.iter().enumerate() {
        assert_eq!(
            frame_number(&p.payload),
            Some(seq + i as u64),
            "in order, none lost"
        );
        assert_eq!(p.ssrc, dst_ssrc, "the receiver leg's SSRC");
        assert_eq!(p.mid, Some(receiver.mid), "MID under the receiver's id (7)");
        assert_eq!(
            p.orientation,
            Some(VideoOrientation::Deg90),
            "the sender's orientation, under the receiver's id (5)"
        );
    }
    for w in got.windows(2) {
        assert_eq!(w[1].seq, w[0].seq + 1, "contiguous sequence numbers");
        assert_eq!(w[1].ts.wrapping_sub(w[0].ts), 3000, "the sender's spacing");
    }
    // Sealed by the driver: no transport-wide sequence number (str0m writes one on every
    // packet it sends where transport-cc is negotiated, as it is here). The checks above hold
    // for those too.
    let sealed = got.iter().filter(|p| !p.transport_cc).count();
    let stats = engine.fast_egress();
    assert!(
        sealed >= count as usize / 2 && stats.through_str0m >= 1,
        "{sealed} of {count} sealed by the driver; {stats:?}"
    );
    engine.shutdown(task).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_receivers_sender_reports_follow_the_forwarded_streams_clock() {
    let (engine, task) = start().await;
    let (sender, mut receiver, dst_ssrc) = forwarded_pair(&engine).await;
    // RTP time = 90 kHz since `t0` on the sender's side, plus a jump of 10 s at 0.5 s (the
    // sender's clock restarting, as a source switch looks to the receiver): a sender report
    // true to the stream pairs NTP time t with RTP time 90,000 × (t − t0) [+ 900,000 after the
    // jump]. A report from the leg's first packets alone (no later anchor) misses the jump.
    let t0 = SystemTime::now();
    let started = Instant::now();
    let jump_at = Duration::from_millis(500);
    let jump = 900_000u32;
    let rtp_at = |since_t0: Duration| {
        let base = (since_t0.as_secs_f64() * 90_000.0) as u32;
        if since_t0 >= jump_at {
            base.wrapping_add(jump)
        } else {
            base
        }
    };
    let mut seq = 1u64;
    let deadline = started + Duration::from_secs(10);
    let report = loop {
        assert!(
            Instant::now() < deadline,
            "no sender report about the stream"
        );
        // Real time: one frame per 20 ms (the pace is the point here, not a wait for an
        // event).
        sender.send(seq, rtp_at(started.elapsed()));
        seq += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut found = None;
        while let Ok(e) = receiver.events.try_recv() {
            if let PeerEvent::Rtp(p) = e {
                assert_eq!(p.ssrc, dst_ssrc);
                // A report made a while after the jump (the anchor interval, and margin).
                if let Some((ntp, rtp)) = p.sr {
                    if ntp
                        .duration_since(t0)
                        .is_ok_and(|d| d > jump_at + Duration::from_millis(1200))
                    {
                        found = Some((ntp, rtp));
                    }
                }
            }
        }
        if let Some(r) = found {
            break r;
        }
    };
    let (ntp, rtp) = report;
    let expected = rtp_at(ntp.duration_since(t0).unwrap());
    let off = rtp.wrapping_sub(expected) as i32;
    assert!(
        off.abs() < 9_000,
        "the SR's RTP time is {off} ticks off the stream's clock (more than 100 ms)"
    );
    let stats = engine.fast_egress();
    assert!(stats.sealed > 0 && stats.through_str0m >= 2, "{stats:?}");
    engine.shutdown(task).await.unwrap();
}

#[cfg(debug_assertions)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packets_the_driver_leaves_out_are_repaired_from_its_own_cache() {
    repaired(true).await;
}

/// Without RTX negotiated the repair is the packet again, as it was first sealed.
#[cfg(debug_assertions)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_rtx_lost_packets_are_sent_again() {
    repaired(false).await;
}

#[cfg(debug_assertions)]
async fn repaired(rtx: bool) {
    let (engine, task) = start().await;
    let (sender, mut receiver, ssrc) = forwarded_pair_with(&engine, rtx).await;
    let seq = until_flowing(&sender, &mut receiver, 1).await;
    engine.drop_fast_egress_every(7);
    let count = 100u64;
    let want: std::collections::BTreeSet<u64> = (seq..seq + count).collect();
    let mut have = std::collections::BTreeSet::new();
    // Paced a little, so that NACKs and repairs interleave with the stream as on a network.
    let mut next = seq;
    while next < seq + count {
        sender.send(next, 3000 * next as u32);
        next += 1;
        if next % 10 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !want.is_subset(&have) {
        assert!(
            Instant::now() < deadline,
            "not repaired: {:?} ({:?})",
            want.difference(&have).collect::<Vec<_>>(),
            engine.fast_egress()
        );
        // Keep the stream going: a receiver sees a hole (and NACKs it) once a later packet
        // arrives.
        sender.send(next, 3000 * next as u32);
        next += 1;
        while let Ok(Some(PeerEvent::Rtp(p))) =
            tokio::time::timeout(Duration::from_millis(20), receiver.events.recv()).await
        {
            if let Some(n) = frame_number(&p.payload) {
                have.insert(n);
            }
        }
    }
    let stats = engine.fast_egress();
    assert!(
        stats.dropped >= 10 && stats.repaired >= stats.dropped / 2,
        "{stats:?}"
    );
    // With RTX the repairs came on another SSRC (the receiver's RTX SSRC: the only other one
    // of its stream); without, only on the stream's own.
    let wire = receiver.wire_ssrcs.lock().unwrap().clone();
    assert!(wire.contains(&ssrc), "{wire:?}");
    if rtx {
        assert_eq!(wire.len(), 2, "the stream's and its RTX SSRC: {wire:?}");
    } else {
        assert_eq!(wire.len(), 1, "no RTX SSRC: {wire:?}");
    }
    engine.drop_fast_egress_every(0);
    engine.shutdown(task).await.unwrap();
}

/// A stream the plugin sends itself (the conference's composite) leaves the same way: sealed
/// by the driver, with the receiver's MID, and (debug builds) repaired when left out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_sent_stream_is_sealed_by_the_driver_and_repaired() {
    let (engine, task) = start().await;
    let config = RtcConfig::new()
        .clear_extension_map()
        .set_extension(9, Extension::RtpMid)
        .set_extension(3, Extension::TransportSequenceNumber);
    let (mut receiver, dst, answer) = Peer::call(&engine, config, Direction::RecvOnly).await;
    receiver.connected().await;
    let mid = super::mids_of(&answer)[0].to_string();
    #[cfg(debug_assertions)]
    engine.drop_fast_egress_every(7);
    let send = |seq: u16| {
        let payload = format!("frame {seq}").into_bytes();
        let packet = super::rtp::serialize(
            &super::rtp::Rtp {
                pt: 96,
                marker: true,
                seq,
                timestamp: 3000 * u32::from(seq),
                ssrc: 1,
                payload: &payload,
            },
            &[],
        );
        engine.send_rtp(1, dst, &mid, &packet).unwrap();
    };
    let count = 60u16;
    let mut next = 1u16;
    let mut got = std::collections::BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while (1..=count).any(|n| !got.contains_key(&u64::from(n))) {
        assert!(
            Instant::now() < deadline,
            "missing: {:?} ({:?})",
            (1..=count)
                .filter(|n| !got.contains_key(&u64::from(*n)))
                .collect::<Vec<_>>(),
            engine.fast_egress()
        );
        // Paced as a stream is; it goes on past `count` so that every hole shows.
        send(next);
        next += 1;
        while let Ok(Some(PeerEvent::Rtp(p))) =
            tokio::time::timeout(Duration::from_millis(5), receiver.events.recv()).await
        {
            if let Some(n) = frame_number(&p.payload) {
                got.insert(n, p);
            }
        }
    }
    let sealed: Vec<_> = got.values().filter(|p| !p.transport_cc).collect();
    assert!(sealed.len() >= usize::from(count) / 2, "{}", sealed.len());
    assert!(sealed.iter().all(|p| p.mid == Some(receiver.mid)));
    let stats = engine.fast_egress();
    if cfg!(debug_assertions) {
        assert!(stats.dropped > 0 && stats.repaired > 0, "{stats:?}");
    }
    engine.shutdown(task).await.unwrap();
}
