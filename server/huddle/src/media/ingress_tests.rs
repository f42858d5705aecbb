//! The fast ingress against str0m peers on loopback (driver.rs module docs, "Fast ingress"): a
//! running [`MediaEngine`] without bandwidth estimation opens a str0m sender's SRTP itself, so
//! str0m never sees that RTP and every piece of feedback about it is the driver's.
//!
//! What must hold: a sender with bandwidth estimation on gets transport-wide feedback it can
//! use (its estimate climbs from its start value); a packet lost on the way is NACKed and the
//! sender's RTX repair reaches the plugin as the original packet; replayed, forged and
//! SSRC-flooding datagrams are dropped and counted while the stream goes on.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use huddle_sdk::HangupReason;
use str0m::bwe::{Bitrate, BweKind};
use str0m::change::SdpAnswer;
use str0m::media::{Direction, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpWrite, SeqNo};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::forward_tests::engine_with;
use super::{MediaEngine, MediaEvents};

/// The frames the "plugin" got (payloads start with `frame <n> `), and the threads they came
/// on.
#[derive(Default)]
struct Frames(Mutex<BTreeSet<u64>>, Mutex<BTreeSet<String>>);

impl Frames {
    fn has(&self, n: u64) -> bool {
        self.0.lock().unwrap().contains(&n)
    }
    fn all(&self) -> BTreeSet<u64> {
        self.0.lock().unwrap().clone()
    }
}

impl MediaEvents for Frames {
    fn ready(&self, _: u64) {}
    fn rtp(&self, _: u64, _: &str, packet: Vec<u8>) {
        if let Some(n) = super::rtp::parse(&packet).and_then(|p| frame_number(p.payload)) {
            self.0.lock().unwrap().insert(n);
        }
        let thread = std::thread::current();
        self.1
            .lock()
            .unwrap()
            .insert(thread.name().unwrap_or("unnamed").to_owned());
    }
    fn rtcp(&self, _: u64, _: Vec<u8>) {}
    fn hangup(&self, _: u64, _: HangupReason) {}
    fn bitrate(&self, _: u64, _: u64) {}
}

fn frame_number(payload: &[u8]) -> Option<u64> {
    let text = payload.split(|b| *b == b' ').nth(1)?;
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// What the sender's task shares with the test.
#[derive(Default)]
struct Wire {
    /// RTP datagrams sent so far (originals and repairs).
    rtp_sent: u64,
    /// Which of them (by that count) to leave out, as a lossy network would.
    drop: BTreeSet<u64>,
    /// The first RTP datagrams sent, as they went.
    captured: Vec<Vec<u8>>,
    /// The engine's address.
    engine: Option<SocketAddr>,
}

enum Command {
    /// Frame `seq` with a payload of `size` bytes.
    Send { seq: u64, size: usize },
    /// A datagram to the engine, as is.
    Raw(Vec<u8>),
}

struct Sender {
    commands: mpsc::UnboundedSender<Command>,
    connected: mpsc::UnboundedReceiver<()>,
    /// Each TWCC estimate the sender's str0m made, in bits per second.
    estimates: mpsc::UnboundedReceiver<u64>,
    wire: Arc<Mutex<Wire>>,
}

impl Sender {
    /// A str0m peer offering one send-only video m-line (VP8 with RTX) to the engine, with
    /// bandwidth estimation starting at `bwe` when given; connected when this returns.
    async fn call(engine: &MediaEngine, plugin: Arc<Frames>, bwe: Option<Bitrate>) -> Sender {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let local = socket.local_addr().unwrap();
        let mut config = RtcConfig::new()
            .set_rtp_mode(true)
            .clear_codecs()
            .enable_vp8(true)
            .set_stats_interval(None);
        if bwe.is_some() {
            config = config.enable_bwe(bwe);
        }
        let mut rtc = config.build(Instant::now());
        rtc.add_local_candidate(Candidate::host(local, "udp").unwrap());
        let mut change = rtc.sdp_api();
        let mid = change.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
        let (offer, pending) = change.apply().unwrap();
        let (_, answer) = engine
            .answer(1, plugin, None, offer.to_sdp_string().as_bytes())
            .unwrap();
        rtc.sdp_api()
            .accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap())
            .unwrap();
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (connected_tx, connected) = mpsc::unbounded_channel();
        let (estimate_tx, estimates) = mpsc::unbounded_channel();
        let wire = Arc::new(Mutex::new(Wire::default()));
        tokio::spawn(drive(
            rtc,
            socket,
            local,
            mid,
            command_rx,
            connected_tx,
            estimate_tx,
            wire.clone(),
        ));
        let mut sender = Sender {
            commands,
            connected,
            estimates,
            wire,
        };
        tokio::time::timeout(Duration::from_secs(10), sender.connected.recv())
            .await
            .expect("the sender connects")
            .expect("sender task alive");
        sender
    }

    fn send(&self, seq: u64, size: usize) {
        let _ = self.commands.send(Command::Send { seq, size });
    }

    fn raw(&self, datagram: Vec<u8>) {
        let _ = self.commands.send(Command::Raw(datagram));
    }

    /// Sends frames from `seq` until the plugin has one; the next sequence number.
    async fn until_flowing(&self, plugin: &Frames, mut seq: u64) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            assert!(Instant::now() < deadline, "nothing reached the plugin");
            self.send(seq, 200);
            seq += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
            if !plugin.all().is_empty() {
                return seq;
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn drive(
    mut rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    mid: Mid,
    mut commands: mpsc::UnboundedReceiver<Command>,
    connected: mpsc::UnboundedSender<()>,
    estimates: mpsc::UnboundedSender<u64>,
    wire: Arc<Mutex<Wire>>,
) {
    let mut buf = vec![0u8; 2048];
    loop {
        let timeout = loop {
            match rtc.poll_output() {
                Ok(Output::Transmit(t)) => {
                    let mut w = wire.lock().unwrap();
                    w.engine = Some(t.destination);
                    if super::driver::srtp_kind(&t.contents) == Some(false) {
                        w.rtp_sent += 1;
                        if w.captured.len() < 4 {
                            w.captured.push(t.contents.to_vec());
                        }
                        if w.drop.contains(&w.rtp_sent) {
                            continue;
                        }
                    }
                    let _ = socket.try_send_to(&t.contents, t.destination);
                }
                Ok(Output::Timeout(t)) => break t,
                Ok(Output::Event(Event::Connected)) => {
                    let _ = connected.send(());
                }
                Ok(Output::Event(Event::EgressBitrateEstimate(BweKind::Twcc {
                    estimate, ..
                }))) => {
                    let _ = estimates.send(estimate.as_u64());
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
            }
            command = commands.recv() => {
                let now = Instant::now();
                match command {
                    None => return,
                    Some(Command::Send { seq, size }) => {
                        let mut payload = format!("frame {seq} ").into_bytes();
                        payload.resize(size.max(payload.len()), b'.');
                        let pt = rtc.codec_config().params().first().map(|p| p.pt());
                        if let (Some(pt), Some(tx)) = (pt, rtc.direct_api().stream_tx_by_mid(mid, None)) {
                            tx.write_rtp(
                                RtpWrite::new(pt, SeqNo::from(seq), 3000 * seq as u32, now, payload)
                                    .marker(true)
                                    .nackable(true),
                            );
                        }
                    }
                    Some(Command::Raw(datagram)) => {
                        let to = wire.lock().unwrap().engine;
                        if let Some(to) = to {
                            let _ = socket.try_send_to(&datagram, to);
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

async fn start() -> (MediaEngine, super::EngineTask) {
    engine_with(false, true, true).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_senders_bandwidth_estimate_climbs_on_the_drivers_transport_feedback() {
    let (engine, task) = start().await;
    let plugin = Arc::new(Frames::default());
    let initial = Bitrate::kbps(300);
    let mut sender = Sender::call(&engine, plugin.clone(), Some(initial)).await;
    let mut seq = sender.until_flowing(&plugin, 1).await;
    // About 2.4 Mbit/s offered (1,200 bytes every 4 ms), so that the estimate has room to
    // climb; the stream's pace, not a wait for an event.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut best = 0;
    while best < initial.as_u64() * 2 {
        assert!(
            Instant::now() < deadline,
            "the estimate stayed at {best} bit/s; {:?}",
            engine.fast_ingress()
        );
        sender.send(seq, 1200);
        seq += 1;
        tokio::time::sleep(Duration::from_millis(4)).await;
        while let Ok(e) = sender.estimates.try_recv() {
            best = best.max(e);
        }
    }
    let stats = engine.fast_ingress();
    assert_eq!(stats.legs, 1, "{stats:?}");
    assert!(stats.twcc > 0 && stats.opened > 0, "{stats:?}");
    // The feedback's arrival times are the kernel's (the socket option is on and the stamps
    // reach the ingress), every packet's.
    if cfg!(target_os = "linux") {
        assert_eq!(stats.stamped, stats.opened, "{stats:?}");
    }
    engine.shutdown(task).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_packet_lost_on_the_way_is_nacked_and_its_rtx_repair_reaches_the_plugin() {
    let (engine, task) = start().await;
    let plugin = Arc::new(Frames::default());
    let sender = Sender::call(&engine, plugin.clone(), None).await;
    let seq = sender.until_flowing(&plugin, 1).await;
    let count = 100u64;
    {
        let mut w = sender.wire.lock().unwrap();
        let at = w.rtp_sent;
        w.drop.extend([at + 20, at + 45, at + 70]);
    }
    for s in seq..seq + count {
        sender.send(s, 300);
        // A stream's pace, so that NACKs and repairs interleave with it.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let want: BTreeSet<u64> = (seq..seq + count).collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut next = seq + count;
    while !want.is_subset(&plugin.all()) {
        assert!(
            Instant::now() < deadline,
            "not repaired: {:?}; {:?}; {:?}",
            want.difference(&plugin.all()).collect::<Vec<_>>(),
            engine.fast_ingress(),
            engine.totals()
        );
        // Keep the stream going, as a sender does.
        sender.send(next, 300);
        next += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stats = engine.fast_ingress();
    assert!(stats.repaired >= 3, "{stats:?}");
    assert!(engine.totals().nacks_sent > 0, "{:?}", engine.totals());
    // The driver runs on a thread of its own, not on the runtime that started it (mod.rs,
    // `MediaEngine::start`): every packet reached the plugin from that one thread.
    let threads = plugin.1.lock().unwrap().clone();
    assert_eq!(threads, BTreeSet::from(["huddle-media".to_owned()]));
    engine.shutdown(task).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_forged_and_flooding_datagrams_are_dropped_and_the_stream_goes_on() {
    let (engine, task) = start().await;
    let plugin = Arc::new(Frames::default());
    let sender = Sender::call(&engine, plugin.clone(), None).await;
    let mut seq = sender.until_flowing(&plugin, 1).await;
    let captured = sender.wire.lock().unwrap().captured.clone();
    assert!(!captured.is_empty());
    let before = engine.fast_ingress();
    // Replays of what went through already.
    for datagram in &captured {
        sender.raw(datagram.clone());
    }
    // A forged packet: a new sequence number (past the replay check) under the old tag.
    let mut forged = captured[0].clone();
    let seq_now = u16::from_be_bytes([forged[2], forged[3]]);
    forged[2..4].copy_from_slice(&seq_now.wrapping_add(1000).to_be_bytes());
    sender.raw(forged);
    // 500 new SSRCs (the SSRC is authenticated: none opens), 20 at a time so that no
    // socket buffer overflows.
    for i in 0..500u32 {
        let mut flood = captured[0].clone();
        flood[8..12].copy_from_slice(&(0x7000_0000 + i).to_be_bytes());
        sender.raw(flood);
        if i % 20 == 19 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    // The stream goes on: a frame sent after all of that arrives.
    let probe = seq + 10;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !plugin.has(probe) {
        assert!(Instant::now() < deadline, "{:?}", engine.fast_ingress());
        sender.send(seq, 200);
        seq += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // UDP on a busy machine may lose some of the burst: what arrived was refused (none of it
    // opened into a stream: nothing unplaceable), and the stream went on (above).
    let after = engine.fast_ingress();
    assert!(after.replayed > before.replayed, "{before:?} → {after:?}");
    assert!(
        after.auth_failed > before.auth_failed,
        "{before:?} → {after:?}"
    );
    assert_eq!(after.unhandled, before.unhandled, "{before:?} → {after:?}");
    engine.shutdown(task).await.unwrap();
}
