//! The forwarding fast path across two legs, end to end on loopback: a running [`MediaEngine`]
//! and two str0m peers (full ICE, DTLS-SRTP) in the test — a sender whose video the engine
//! forwards into a receiver's leg, as the screen-share relay and an SFU use it.
//!
//! What must hold: the receiver gets every packet with the payload unchanged, under the SSRC the
//! engine announced for its leg (not the sender's), with contiguous sequence numbers and the
//! sender's timestamp spacing; no forwarded packet reaches the plugin; the receiver's key-frame
//! request reaches the sender (at most once per [`FORWARDED_KEYFRAME_INTERVAL`]); the plugin's
//! own request for a key frame reaches the sender too; the sender's leg ending leaves the
//! receiver's leg up.
//!
//! A tap (another plugin receiving a leg's incoming stream, as the conference mixer takes the
//! presenter's screen) is tested here too, with the same peers: the tapper gets every packet
//! under the tapped session's id, forwarded or not, may ask for key frames, and gets nothing
//! more once it untaps or the tapped leg is gone, and a tap of a leg that is gone is refused
//! with `NotFound`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use huddle_sdk::HangupReason;
use str0m::change::SdpAnswer;
use str0m::media::{Direction, KeyframeRequestKind, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpWrite, SeqNo};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::driver::FORWARDED_KEYFRAME_INTERVAL;
use super::{CodecName, EngineSettings, MediaEngine, MediaEvents};

/// What the engine told the "plugin".
#[derive(Default)]
struct Seen {
    ready: Vec<u64>,
    rtp: Vec<(u64, String)>,
    /// Each packet's session and payload (the RTP header stripped).
    payloads: Vec<(u64, Vec<u8>)>,
    hangups: Vec<(u64, HangupReason)>,
}

#[derive(Default)]
struct Recorder(Mutex<Seen>);

impl Recorder {
    fn seen<R>(&self, f: impl FnOnce(&Seen) -> R) -> R {
        f(&self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner))
    }
}

impl MediaEvents for Recorder {
    fn ready(&self, session: u64) {
        self.0.lock().unwrap().ready.push(session);
    }
    fn rtp(&self, session: u64, mid: &str, packet: Vec<u8>) {
        let mut seen = self.0.lock().unwrap();
        seen.rtp.push((session, mid.to_owned()));
        if let Some(p) = super::rtp::parse(&packet) {
            seen.payloads.push((session, p.payload.to_vec()));
        }
    }
    fn rtcp(&self, _session: u64, _packet: Vec<u8>) {}
    fn hangup(&self, session: u64, reason: HangupReason) {
        self.0.lock().unwrap().hangups.push((session, reason));
    }
    fn bitrate(&self, _session: u64, _bps: u64) {}
}

/// What a test peer reports.
#[derive(Debug)]
enum PeerEvent {
    Connected,
    Rtp {
        ssrc: u32,
        seq: u64,
        ts: u32,
        payload: Vec<u8>,
    },
    KeyframeRequest,
}

/// What a test peer is told to do.
enum PeerCommand {
    Send { seq: u64, ts: u32, payload: Vec<u8> },
    RequestKeyframe,
}

/// A str0m peer driven by its own task: events out, commands in.
struct Peer {
    events: mpsc::UnboundedReceiver<PeerEvent>,
    commands: mpsc::UnboundedSender<PeerCommand>,
}

impl Peer {
    /// Offers one video m-line in `direction` to the engine, applies the answer and starts the
    /// peer's task. Returns the peer, its session and the engine's answer.
    async fn call(
        engine: &MediaEngine,
        events: Arc<Recorder>,
        direction: Direction,
    ) -> (Peer, u64, String) {
        Peer::call_as(engine, 1, events, direction).await
    }

    /// As [`Peer::call`], for plugin `owner`.
    async fn call_as(
        engine: &MediaEngine,
        owner: usize,
        events: Arc<Recorder>,
        direction: Direction,
    ) -> (Peer, u64, String) {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let local = socket.local_addr().unwrap();
        let mut rtc = RtcConfig::new()
            .set_rtp_mode(true)
            .clear_codecs()
            .enable_vp8(true)
            .set_stats_interval(None)
            .build(Instant::now());
        rtc.add_local_candidate(Candidate::host(local, "udp").unwrap());
        let mut change = rtc.sdp_api();
        let mid = change.add_media(MediaKind::Video, direction, None, None, None);
        let (offer, pending) = change.apply().unwrap();
        let (session, answer) = engine
            .answer(owner, events, None, offer.to_sdp_string().as_bytes())
            .unwrap();
        rtc.sdp_api()
            .accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap())
            .unwrap();
        let (event_tx, event_rx) = mpsc::unbounded_channel();
        let (command_tx, command_rx) = mpsc::unbounded_channel();
        tokio::spawn(drive(rtc, socket, local, mid, event_tx, command_rx));
        (
            Peer {
                events: event_rx,
                commands: command_tx,
            },
            session,
            answer,
        )
    }

    /// Sends frame `seq` (payload "frame <seq>", 3000 ticks per frame).
    fn send_frame(&self, seq: u64) {
        self.commands
            .send(PeerCommand::Send {
                seq,
                ts: 3000 * seq as u32,
                payload: format!("frame {seq}").into_bytes(),
            })
            .unwrap();
    }

    async fn next(&mut self, what: &str) -> PeerEvent {
        tokio::time::timeout(Duration::from_secs(10), self.events.recv())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
            .expect("peer task alive")
    }

    async fn until(&mut self, what: &str, pred: impl Fn(&PeerEvent) -> bool) -> PeerEvent {
        loop {
            let e = self.next(what).await;
            if pred(&e) {
                return e;
            }
        }
    }
}

async fn drive(
    mut rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    mid: Mid,
    events: mpsc::UnboundedSender<PeerEvent>,
    mut commands: mpsc::UnboundedReceiver<PeerCommand>,
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
                    let _ = events.send(PeerEvent::Rtp {
                        ssrc: *p.header.ssrc,
                        seq: *p.seq_no,
                        ts: p.header.timestamp,
                        payload: p.payload.to_vec(),
                    });
                }
                Ok(Output::Event(Event::KeyframeRequest(_))) => {
                    let _ = events.send(PeerEvent::KeyframeRequest);
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
                if let Ok(receive) = Receive::new(Protocol::Udp, source, local, &buf[..n]) {
                    let _ = rtc.handle_input(Input::Receive(Instant::now(), receive));
                }
                continue;
            }
            command = commands.recv() => {
                let now = Instant::now();
                match command {
                    None => return,
                    Some(PeerCommand::Send { seq, ts, payload }) => {
                        let pt = rtc.codec_config().params().first().map(|p| p.pt());
                        if let (Some(pt), Some(tx)) = (pt, rtc.direct_api().stream_tx_by_mid(mid, None)) {
                            tx.write_rtp(
                                RtpWrite::new(pt, SeqNo::from(seq), ts, now, payload)
                                    .marker(true)
                                    .nackable(true),
                            );
                        }
                    }
                    Some(PeerCommand::RequestKeyframe) => {
                        if let Some(rx) = rtc.direct_api().stream_rx_by_mid(mid, None) {
                            rx.request_keyframe(KeyframeRequestKind::Pli);
                        }
                    }
                }
                let _ = rtc.handle_input(Input::Timeout(now));
            }
            () = tokio::time::sleep_until(timeout.into()) => {
                let _ = rtc.handle_input(Input::Timeout(Instant::now()));
            }
        }
    }
}

/// The `a=ssrc:` of the engine's answer (what it sends with on that leg).
pub(super) fn answered_ssrc(answer: &str) -> u32 {
    answer
        .lines()
        .find_map(|l| l.strip_prefix("a=ssrc:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("the answer announces the leg's SSRC")
}

fn mid_of(answer: &str) -> String {
    super::mids_of(answer)[0].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_forwarded_into_another_leg_arrives_rewritten_and_key_frame_requests_go_back() {
    let (engine, task) = MediaEngine::start(EngineSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        advertise: None,
        connect_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(10),
        max_sessions: 8,
        codecs: vec![CodecName::Vp8],
        bandwidth_estimation: true,
        fast_egress: false,
        fast_ingress: false,
        udp_gso: true,
        udp_recv_buffer: 0,
    })
    .await
    .unwrap();
    let plugin = Arc::new(Recorder::default());
    let (mut sender, src, src_answer) =
        Peer::call(&engine, plugin.clone(), Direction::SendOnly).await;
    let (mut receiver, dst, dst_answer) =
        Peer::call(&engine, plugin.clone(), Direction::RecvOnly).await;
    assert!(src_answer.contains("a=recvonly"), "{src_answer}");
    assert!(dst_answer.contains("a=sendonly"), "{dst_answer}");
    sender
        .until("the sender to connect", |e| {
            matches!(e, PeerEvent::Connected)
        })
        .await;
    receiver
        .until("the receiver to connect", |e| {
            matches!(e, PeerEvent::Connected)
        })
        .await;
    // Set up just before the sender starts: the engine applies a command queued before a
    // datagram arrived ahead of it, so not even the first packet reaches the plugin.
    engine
        .forward(1, src, &mid_of(&src_answer), dst, &mid_of(&dst_answer))
        .unwrap();

    // The sender's own numbering, starting high and with a 3000-tick frame spacing.
    let first_seq = 40_000u64;
    let first_ts = 1_000_000u32;
    let count = 50u64;
    // Packets written before the receiver's DTLS is fully up may be lost: send until some
    // arrive, then a counted burst.
    let mut seq = first_seq;
    let mut arrived = false;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !arrived && Instant::now() < deadline {
        let ts = first_ts.wrapping_add(3000 * (seq - first_seq) as u32);
        sender
            .commands
            .send(PeerCommand::Send {
                seq,
                ts,
                payload: format!("frame {seq}").into_bytes(),
            })
            .unwrap();
        seq += 1;
        let next = tokio::time::timeout(Duration::from_millis(50), receiver.events.recv()).await;
        arrived = matches!(next, Ok(Some(PeerEvent::Rtp { .. })));
    }
    assert!(arrived, "nothing was forwarded");
    let burst_start = seq;
    for i in 0..count {
        let s = burst_start + i;
        sender
            .commands
            .send(PeerCommand::Send {
                seq: s,
                ts: first_ts.wrapping_add(3000 * (s - first_seq) as u32),
                payload: format!("frame {s}").into_bytes(),
            })
            .unwrap();
    }
    let dst_ssrc = answered_ssrc(&dst_answer);
    let mut burst = Vec::new();
    while burst.len() < count as usize {
        if let PeerEvent::Rtp {
            ssrc,
            seq,
            ts,
            payload,
        } = receiver.next("the forwarded burst").await
        {
            let text = String::from_utf8(payload).unwrap();
            let sent: u64 = text.strip_prefix("frame ").unwrap().parse().unwrap();
            if sent >= burst_start {
                assert_eq!(ssrc, dst_ssrc, "rewritten to the receiver leg's SSRC");
                burst.push((sent, seq, ts));
            }
        }
    }
    for pair in burst.windows(2) {
        let ((a_sent, a_seq, a_ts), (b_sent, b_seq, b_ts)) = (pair[0], pair[1]);
        assert_eq!(b_sent, a_sent + 1, "in order, none lost on loopback");
        assert_eq!(b_seq, a_seq + 1, "contiguous output sequence numbers");
        assert_eq!(
            b_ts.wrapping_sub(a_ts),
            3000,
            "the sender's timestamp spacing"
        );
    }
    assert!(
        plugin.seen(|s| s.rtp.iter().all(|(session, _)| *session != src)),
        "forwarded packets never reach the plugin; it got {:?}",
        plugin.seen(|s| s
            .payloads
            .iter()
            .map(|(session, p)| (*session, String::from_utf8_lossy(p).into_owned()))
            .collect::<Vec<_>>())
    );
    assert!(plugin.seen(|s| s.ready.contains(&src) && s.ready.contains(&dst)));

    // The receiver asks for a key frame: the sender is asked; after the rate limit's interval,
    // again.
    receiver
        .commands
        .send(PeerCommand::RequestKeyframe)
        .unwrap();
    sender
        .until("the receiver's PLI at the sender", |e| {
            matches!(e, PeerEvent::KeyframeRequest)
        })
        .await;
    tokio::time::sleep(FORWARDED_KEYFRAME_INTERVAL + Duration::from_millis(100)).await;
    receiver
        .commands
        .send(PeerCommand::RequestKeyframe)
        .unwrap();
    sender
        .until("a later PLI at the sender", |e| {
            matches!(e, PeerEvent::KeyframeRequest)
        })
        .await;
    // The plugin's own request (a viewer joined) reaches the sender too.
    engine
        .request_keyframe(1, src, &mid_of(&src_answer))
        .unwrap();
    sender
        .until("the plugin's PLI at the sender", |e| {
            matches!(e, PeerEvent::KeyframeRequest)
        })
        .await;

    // The sender's leg goes: the receiver's leg stays, fed by nothing.
    engine.close(1, src).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !plugin.seen(|s| s.hangups.contains(&(src, HangupReason::Normal))) {
        assert!(Instant::now() < deadline, "the sender's leg did not end");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(plugin.seen(|s| s.hangups.iter().all(|(s, _)| *s != dst)));
    engine.shutdown(task).await.unwrap();
    // Both legs got our own SRTP contexts (str0m to str0m: AES-256-GCM), and in debug builds
    // they opened every SRTP and SRTCP packet that arrived (read once nothing arrives).
    let verify = engine.srtp_verify();
    assert_eq!(verify.legs, [0, 0, 2, 0], "{verify:?}");
    if cfg!(debug_assertions) {
        assert!(verify.rtp >= count && verify.rtcp > 0, "{verify:?}");
        assert_eq!(
            (verify.rtp_opened, verify.rtcp_opened),
            (verify.rtp, verify.rtcp),
            "{verify:?}"
        );
    }
}

async fn start_engine() -> (MediaEngine, super::EngineTask) {
    engine_on_loopback(true, false).await
}

/// An engine on a loopback port for VP8, with or without bandwidth estimation and fast egress.
pub(super) async fn engine_on_loopback(
    bandwidth_estimation: bool,
    fast_egress: bool,
) -> (MediaEngine, super::EngineTask) {
    engine_with(bandwidth_estimation, fast_egress, false).await
}

/// As [`engine_on_loopback`], with or without the fast ingress too.
pub(super) async fn engine_with(
    bandwidth_estimation: bool,
    fast_egress: bool,
    fast_ingress: bool,
) -> (MediaEngine, super::EngineTask) {
    MediaEngine::start(EngineSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        advertise: None,
        connect_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(10),
        max_sessions: 8,
        codecs: vec![CodecName::Vp8],
        bandwidth_estimation,
        fast_egress,
        fast_ingress,
        udp_gso: true,
        udp_recv_buffer: 0,
    })
    .await
    .unwrap()
}

/// Sends `frame <seq>` packets from `sender` until `arrived` says one reached its target;
/// returns the next sequence number. Bounded: panics after 10 s.
async fn send_until(sender: &Peer, mut seq: u64, arrived: impl Fn() -> bool) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !arrived() {
        assert!(Instant::now() < deadline, "nothing arrived");
        sender.send_frame(seq);
        seq += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    seq
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_plugin_taps_a_stream_forwarded_or_not_and_the_tap_ends_with_the_leg() {
    let (engine, task) = start_engine().await;
    let owner = Arc::new(Recorder::default());
    let tapper = Arc::new(Recorder::default());
    let (mut sender, src, src_answer) =
        Peer::call_as(&engine, 1, owner.clone(), Direction::SendOnly).await;
    let (mut receiver, dst, dst_answer) =
        Peer::call_as(&engine, 1, owner.clone(), Direction::RecvOnly).await;
    let (src_mid, dst_mid) = (mid_of(&src_answer), mid_of(&dst_answer));

    // Nothing to tap yet where there is no leg or stream.
    assert_eq!(
        engine.tap(2, tapper.clone(), 999, &src_mid, true),
        Err(super::MediaError::NotFound)
    );
    assert_eq!(
        engine.tap(2, tapper.clone(), src, "no-such-mid", true),
        Err(super::MediaError::NotFound)
    );
    // A plugin that neither owns nor taps the leg may not ask it for key frames.
    assert_eq!(
        engine.request_keyframe(2, src, &src_mid),
        Err(super::MediaError::NotFound)
    );

    // Not forwarded: the owner and the tapper both get the packets.
    engine.tap(2, tapper.clone(), src, &src_mid, true).unwrap();
    for peer in [&mut sender, &mut receiver] {
        peer.until("the peer to connect", |e| matches!(e, PeerEvent::Connected))
            .await;
    }
    let seq = send_until(&sender, 1, || {
        tapper.seen(|s| !s.payloads.is_empty()) && owner.seen(|s| !s.payloads.is_empty())
    })
    .await;
    assert!(tapper.seen(|s| s
        .rtp
        .iter()
        .all(|(session, mid)| *session == src && *mid == src_mid)));
    assert!(tapper.seen(|s| s.payloads.iter().all(|(_, p)| p.starts_with(b"frame "))));

    // Forwarded: the tapper still gets every packet (the owner does not: the fast path).
    engine.forward(1, src, &src_mid, dst, &dst_mid).unwrap();
    let forwarded_from = seq;
    // The forward command and the sender's packets reach the driver by different ways (its
    // command queue, the socket), so the first packets after it may not be forwarded yet:
    // keep sending until the viewer gets one.
    let mut seq = seq;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < deadline, "the forwarded stream never came");
        sender.send_frame(seq);
        seq += 1;
        if let Ok(Some(PeerEvent::Rtp { .. })) =
            tokio::time::timeout(Duration::from_millis(50), receiver.events.recv()).await
        {
            break;
        }
    }
    let seq = send_until(&sender, seq, || {
        tapper.seen(|s| {
            s.payloads
                .iter()
                .any(|(_, p)| *p == format!("frame {forwarded_from}").into_bytes())
        })
    })
    .await;
    let owner_had = owner.seen(|s| s.payloads.len());

    // The tapper's key-frame request reaches the sender.
    engine.request_keyframe(2, src, &src_mid).unwrap();
    sender
        .until("the tapper's PLI at the sender", |e| {
            matches!(e, PeerEvent::KeyframeRequest)
        })
        .await;

    // Untapped: the tapper gets nothing more, the viewer still does.
    engine.tap(2, tapper.clone(), src, &src_mid, false).unwrap();
    assert_eq!(
        engine.tap(2, tapper.clone(), src, &src_mid, false),
        Err(super::MediaError::NotFound),
        "no second untap"
    );
    // The untap reaches the driver through its command queue and the packets through the
    // socket, in no fixed order, but a tap is served in the same turn as the forward: once
    // the viewer has 20 packets newer than the last one tapped, the tapper is out.
    let frame_number = |payload: &[u8]| -> u64 {
        std::str::from_utf8(payload)
            .ok()
            .and_then(|t| t.strip_prefix("frame ")?.parse().ok())
            .unwrap_or(0)
    };
    let mut next = seq;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(
            Instant::now() < deadline,
            "the tapper kept getting packets after the untap, or the viewer stopped getting them"
        );
        sender.send_frame(next);
        next += 1;
        let Ok(Some(PeerEvent::Rtp { payload, .. })) =
            tokio::time::timeout(Duration::from_millis(50), receiver.events.recv()).await
        else {
            continue;
        };
        let viewed = frame_number(&payload);
        let last_tapped = tapper.seen(|s| {
            s.payloads
                .iter()
                .map(|(_, p)| frame_number(p))
                .max()
                .unwrap_or(0)
        });
        if viewed >= seq && viewed >= last_tapped + 20 {
            break;
        }
    }
    assert_eq!(
        owner.seen(|s| s.payloads.len()),
        owner_had,
        "still forwarded only"
    );

    // Tapped again, then the tapped leg ends: the tap ends with it, nothing is said to the
    // tapper, and tapping the gone leg is refused.
    engine.tap(2, tapper.clone(), src, &src_mid, true).unwrap();
    engine.close(1, src).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !owner.seen(|s| s.hangups.contains(&(src, HangupReason::Normal))) {
        assert!(Instant::now() < deadline, "the sender's leg did not end");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(tapper.seen(|s| s.hangups.is_empty()));
    assert_eq!(
        engine.tap(2, tapper.clone(), src, &src_mid, true),
        Err(super::MediaError::NotFound)
    );
    assert_eq!(
        engine.request_keyframe(2, src, &src_mid),
        Err(super::MediaError::NotFound)
    );
    engine.shutdown(task).await.unwrap();
}
