//! `screenshareload`: how many viewers the screen-share relay serves, with str0m peers (no
//! browser).
//!
//! One presenter calls the room's screen URI over SIP/UDP (digest-authenticated: the relay only
//! lets logged-in users present; run the server with `presenters = ["<user>"]`) with a send-only
//! VP8 m-line and sends a screen-like stream: `--fps` frames per second averaging `--kbps`, a key
//! frame eight times the average size every `--keyframe-secs` and whenever a viewer's key-frame
//! request reaches it, each frame cut into ≤1100-byte packets with the marker on the last. Then
//! `--viewers` viewers call the same URI receive-only (unauthenticated, from a foreign domain:
//! run the relay with `viewers = "anyone"`) and count what arrives. After every leg connected
//! and a warm-up second, it measures `--secs` seconds and prints the packets the presenter sent,
//! what the viewers received, the loss, the key-frame requests that reached the presenter and,
//! with `--server-pid`, the server's CPU (user+sys from `/proc`): % of one core, CPU per viewer,
//! and the projected viewers per core.
//!
//! Each peer has its own UDP socket and tokio task driving its `Rtc` (receive, write when the
//! frame clock says so, drain `poll_output` until `Timeout`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Parser;
use huddle_sip::message::HeaderName;
use huddle_sip::Message;
use md5::{Digest, Md5};
use str0m::change::SdpAnswer;
use str0m::media::{Direction, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpWrite, SeqNo};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcConfig};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

#[derive(Parser, Debug, Clone)]
#[command(about = "Screen-share relay load: one str0m presenter, many str0m viewers")]
struct Args {
    /// The server's SIP/UDP address.
    #[arg(long, default_value = "127.0.0.1:5060")]
    sip: SocketAddr,
    /// The SIP domain.
    #[arg(long, default_value = "example.test")]
    domain: String,
    /// The screen URI's user part.
    #[arg(long, default_value = "screen-team")]
    screen: String,
    /// The presenter's user (digest).
    #[arg(long, default_value = "alice")]
    user: String,
    /// The presenter's password.
    #[arg(long, default_value = "alice-pw")]
    password: String,
    /// Viewers.
    #[arg(long, default_value_t = 10)]
    viewers: usize,
    /// The presentation's average bitrate, kbit/s.
    #[arg(long, default_value_t = 1500)]
    kbps: u64,
    /// Frames per second.
    #[arg(long, default_value_t = 30)]
    fps: u64,
    /// Seconds between periodic key frames.
    #[arg(long, default_value_t = 3)]
    keyframe_secs: u64,
    /// Measured seconds.
    #[arg(long, default_value_t = 20)]
    secs: u64,
    /// New viewer calls per second.
    #[arg(long, default_value_t = 50)]
    rate: u64,
    /// The local address for sockets.
    #[arg(long, default_value = "127.0.0.1")]
    bind: std::net::IpAddr,
    /// The server's process id, to report its CPU time.
    #[arg(long)]
    server_pid: Option<u32>,
}

/// Largest RTP payload sent.
const MAX_PAYLOAD: usize = 1100;
/// A key frame is this many average frames.
const KEYFRAME_FACTOR: usize = 8;

#[derive(Default)]
struct Totals {
    sent: AtomicU64,
    received: AtomicU64,
    /// Sum over viewers of (highest − lowest + 1) sequence numbers seen while measuring.
    expected: AtomicU64,
    connected: AtomicU64,
    failed: AtomicU64,
    keyframe_requests: AtomicU64,
}

/// Routes SIP messages to calls by Call-ID.
struct Sip {
    socket: UdpSocket,
    server: SocketAddr,
    calls: Mutex<HashMap<String, mpsc::UnboundedSender<Message>>>,
}

impl Sip {
    async fn pump(self: Arc<Self>) {
        let mut buf = vec![0u8; 65_536];
        while let Ok((n, _)) = self.socket.recv_from(&mut buf).await {
            let Ok(msg) = Message::parse(Bytes::copy_from_slice(&buf[..n])) else {
                continue;
            };
            let tx = msg.call_id().and_then(|id| {
                self.calls
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .get(id)
                    .cloned()
            });
            if let Some(tx) = tx {
                let _ = tx.send(msg);
            }
        }
    }

    async fn send(&self, text: &str) -> anyhow::Result<()> {
        self.socket.send_to(text.as_bytes(), self.server).await?;
        Ok(())
    }

    fn local(&self) -> String {
        self.socket
            .local_addr()
            .map_or_else(|_| "0.0.0.0:0".into(), |a| a.to_string())
    }
}

fn token() -> String {
    static N: AtomicU64 = AtomicU64::new(1);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{t:x}{n:x}")
}

/// One dialog's identifiers.
struct Call {
    call_id: String,
    from: String,
    to: String,
    ruri: String,
    cseq: u32,
}

/// A request in `call`'s dialog; `branch` is its Via branch (the INVITE's for the ACK of a
/// non-2xx final response, RFC 3261 §17.1.1.3).
fn request(
    sip: &Sip,
    call: &Call,
    method: &str,
    branch: &str,
    extra: &str,
    body: Option<&str>,
) -> String {
    let local = sip.local();
    let mut out = format!(
        "{method} {} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={branch};rport\r\nMax-Forwards: 70\r\nFrom: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {} {method}\r\nContact: <sip:load@{local}>\r\n{extra}",
        call.ruri,
        call.from,
        call.to,
        call.call_id,
        call.cseq,
    );
    match body {
        Some(b) => out.push_str(&format!(
            "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{b}",
            b.len()
        )),
        None => out.push_str("Content-Length: 0\r\n\r\n"),
    }
    out
}

fn hex_md5(text: &str) -> String {
    Md5::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A `param="value"` (or bare) parameter of a digest challenge.
fn param(challenge: &str, name: &str) -> Option<String> {
    challenge.split(',').find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        let k = k.trim().trim_start_matches("Digest").trim();
        (k.eq_ignore_ascii_case(name)).then(|| v.trim().trim_matches('"').to_owned())
    })
}

/// The `Proxy-Authorization` answering a 407 (MD5, qop=auth; RFC 2617 §3.2.2).
fn authorization(challenge: &str, user: &str, password: &str, uri: &str) -> String {
    let realm = param(challenge, "realm").unwrap_or_default();
    let nonce = param(challenge, "nonce").unwrap_or_default();
    let cnonce = token();
    let ha1 = hex_md5(&format!("{user}:{realm}:{password}"));
    let ha2 = hex_md5(&format!("INVITE:{uri}"));
    let response = hex_md5(&format!("{ha1}:{nonce}:00000001:{cnonce}:auth:{ha2}"));
    let mut out = format!(
        "Proxy-Authorization: Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{response}\", algorithm=MD5, qop=auth, nc=00000001, cnonce=\"{cnonce}\""
    );
    if let Some(opaque) = param(challenge, "opaque") {
        out.push_str(&format!(", opaque=\"{opaque}\""));
    }
    out.push_str("\r\n");
    out
}

/// Calls the screen URI with a one-video-m-line offer in `direction`; with credentials, answers
/// the 407. Returns the peer, its socket, the mid and the dialog.
async fn connect(
    args: &Args,
    sip: &Arc<Sip>,
    direction: Direction,
    credentials: bool,
) -> anyhow::Result<(Rtc, UdpSocket, Mid, Call, mpsc::UnboundedReceiver<Message>)> {
    let socket = UdpSocket::bind((args.bind, 0)).await?;
    let local = socket.local_addr()?;
    let mut rtc = RtcConfig::new()
        .set_rtp_mode(true)
        .clear_codecs()
        .enable_vp8(true)
        .set_stats_interval(None)
        .build(Instant::now());
    rtc.add_local_candidate(Candidate::host(local, "udp")?);
    let mut change = rtc.sdp_api();
    let mid = change.add_media(MediaKind::Video, direction, None, None, None);
    let (offer, pending) = change.apply().context("an offer")?;
    let offer = offer.to_sdp_string();
    let call_id = format!("{}@screenshareload", token());
    let (tx, mut rx) = mpsc::unbounded_channel();
    sip.calls
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(call_id.clone(), tx);
    let from_user = if credentials {
        format!("sip:{}@{}", args.user, args.domain)
    } else {
        "sip:viewer@loadgen.invalid".to_owned()
    };
    let ruri = format!("sip:{}@{}", args.screen, args.domain);
    let mut call = Call {
        call_id,
        from: format!("<{from_user}>;tag={}", token()),
        to: format!("<{ruri}>"),
        ruri,
        cseq: 1,
    };
    let mut branch = format!("z9hG4bK{}", token());
    sip.send(&request(sip, &call, "INVITE", &branch, "", Some(&offer)))
        .await?;
    let ok = loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .context("no final response to the INVITE")?
            .context("SIP closed")?;
        match msg.status() {
            Some(s) if s < 200 => continue,
            Some(200..=299) => break msg,
            // Retransmissions of a 407 already answered.
            Some(407) if call.cseq > 1 => continue,
            Some(407) if credentials => {
                let challenge = msg
                    .header(&HeaderName::ProxyAuthenticate)
                    .unwrap_or_default()
                    .to_owned();
                let to = msg.header(&HeaderName::To).unwrap_or_default().to_owned();
                let saved = std::mem::replace(&mut call.to, to);
                sip.send(&request(sip, &call, "ACK", &branch, "", None))
                    .await?;
                call.to = saved;
                call.cseq += 1;
                branch = format!("z9hG4bK{}", token());
                let auth = authorization(&challenge, &args.user, &args.password, &call.ruri);
                sip.send(&request(sip, &call, "INVITE", &branch, &auth, Some(&offer)))
                    .await?;
            }
            Some(s) => bail!("INVITE answered {s} {}", msg.reason().unwrap_or_default()),
            None => continue,
        }
    };
    call.to = ok.header(&HeaderName::To).unwrap_or_default().to_owned();
    let ack_branch = format!("z9hG4bK{}", token());
    sip.send(&request(sip, &call, "ACK", &ack_branch, "", None))
        .await?;
    let answer = SdpAnswer::from_sdp_string(std::str::from_utf8(ok.body())?)?;
    rtc.sdp_api().accept_answer(pending, answer)?;
    Ok((rtc, socket, mid, call, rx))
}

/// What a peer does once connected.
enum Part {
    Presenter,
    Viewer,
}

/// Drives one peer until `stop`, then hangs up.
async fn run_peer(
    args: Args,
    sip: Arc<Sip>,
    totals: Arc<Totals>,
    part: Part,
    measuring: watch::Receiver<bool>,
    stop: watch::Receiver<bool>,
    connected_tx: Option<tokio::sync::oneshot::Sender<()>>,
) -> anyhow::Result<()> {
    let presenter = matches!(part, Part::Presenter);
    let direction = if presenter {
        Direction::SendOnly
    } else {
        Direction::RecvOnly
    };
    let (mut rtc, socket, mid, mut call, _rx) = connect(&args, &sip, direction, presenter).await?;
    let local = socket.local_addr()?;
    let mut connected_tx = connected_tx;
    let mut buf = vec![0u8; 2048];
    let frame_interval = Duration::from_micros(1_000_000 / args.fps.max(1));
    let avg_frame = (args.kbps * 1000 / 8 / args.fps.max(1)) as usize;
    let frames_per_key = (args.keyframe_secs * args.fps).max(2) as usize;
    // Delta frames sized so that the average stays `avg_frame` with the periodic key frames.
    let delta_frame = avg_frame * (frames_per_key - KEYFRAME_FACTOR.min(frames_per_key - 1))
        / (frames_per_key - 1);
    let mut next_frame = Instant::now();
    let (mut seq, mut ts, mut frame_no) = (1u64, 0u32, 0usize);
    let mut want_key = true;
    let mut pt = None;
    let mut connected = false;
    let (mut lo, mut hi, mut got, mut sent) = (u64::MAX, 0u64, 0u64, 0u64);
    loop {
        let timeout = loop {
            match rtc.poll_output()? {
                Output::Transmit(t) => {
                    let _ = socket.try_send_to(&t.contents, t.destination);
                }
                Output::Timeout(t) => break t,
                Output::Event(Event::Connected) => {
                    connected = true;
                    pt = rtc.codec_config().params().first().map(|p| p.pt());
                    totals.connected.fetch_add(1, Ordering::Relaxed);
                    if let Some(tx) = connected_tx.take() {
                        let _ = tx.send(());
                    }
                }
                Output::Event(Event::IceConnectionStateChange(
                    IceConnectionState::Disconnected,
                )) => bail!("ICE disconnected"),
                Output::Event(Event::KeyframeRequest(_)) => {
                    want_key = true;
                    if *measuring.borrow() {
                        totals.keyframe_requests.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Output::Event(Event::RtpPacket(p)) => {
                    if *measuring.borrow() {
                        lo = lo.min(*p.seq_no);
                        hi = hi.max(*p.seq_no);
                        got += 1;
                    }
                }
                Output::Event(_) => {}
            }
        };
        if *stop.borrow() {
            break;
        }
        let sending = presenter && connected;
        let wake = if sending {
            timeout.min(next_frame)
        } else {
            timeout
        };
        tokio::select! {
            r = socket.recv_from(&mut buf) => {
                let (n, source) = r?;
                if let Ok(receive) = Receive::new(Protocol::Udp, source, local, &buf[..n]) {
                    rtc.handle_input(Input::Receive(Instant::now(), receive))?;
                }
                continue;
            }
            () = tokio::time::sleep_until(wake.into()) => {}
        }
        let now = Instant::now();
        if sending && now >= next_frame {
            let key = want_key || frame_no.is_multiple_of(frames_per_key);
            want_key = false;
            let size = if key {
                avg_frame * KEYFRAME_FACTOR
            } else {
                delta_frame
            };
            let packets = size.div_ceil(MAX_PAYLOAD).max(1);
            if let (Some(pt), Some(tx)) = (pt, rtc.direct_api().stream_tx_by_mid(mid, None)) {
                for i in 0..packets {
                    let len = (size - i * MAX_PAYLOAD).min(MAX_PAYLOAD);
                    let payload: Arc<[u8]> = vec![if key { 0x10 } else { 0x00 }; len].into();
                    tx.write_rtp(
                        RtpWrite::new(pt, SeqNo::from(seq), ts, now, payload)
                            .marker(i + 1 == packets)
                            .nackable(true),
                    );
                    seq += 1;
                    if *measuring.borrow() {
                        sent += 1;
                    }
                }
            }
            ts = ts.wrapping_add((90_000 / args.fps.max(1)) as u32);
            frame_no += 1;
            next_frame += frame_interval;
            if next_frame < now {
                next_frame = now + frame_interval;
            }
        }
        rtc.handle_input(Input::Timeout(now))?;
    }
    totals.sent.fetch_add(sent, Ordering::Relaxed);
    totals.received.fetch_add(got, Ordering::Relaxed);
    if got > 0 {
        totals.expected.fetch_add(hi - lo + 1, Ordering::Relaxed);
    }
    call.cseq += 1;
    let bye_branch = format!("z9hG4bK{}", token());
    sip.send(&request(&sip, &call, "BYE", &bye_branch, "", None))
        .await?;
    Ok(())
}

/// user+sys CPU seconds of a process, from /proc/<pid>/stat.
fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime (fields 14 and 15 of stat(5)) are 12th and 13th after the name.
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // CLK_TCK is 100 on Linux.
    Some(ticks / 100.0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    str0m::crypto::from_feature_flags().install_process_default();
    let sip = Arc::new(Sip {
        socket: UdpSocket::bind((args.bind, 0)).await?,
        server: args.sip,
        calls: Mutex::new(HashMap::new()),
    });
    tokio::spawn(sip.clone().pump());
    let totals = Arc::new(Totals::default());
    let (measure_tx, measure_rx) = watch::channel(false);
    let (stop_tx, stop_rx) = watch::channel(false);
    let spawn = |part: Part, up: Option<tokio::sync::oneshot::Sender<()>>| {
        let (a, s, t, m, st) = (
            args.clone(),
            sip.clone(),
            totals.clone(),
            measure_rx.clone(),
            stop_rx.clone(),
        );
        tokio::spawn(async move {
            let totals = t.clone();
            if let Err(e) = run_peer(a, s, t, part, m, st, up).await {
                totals.failed.fetch_add(1, Ordering::Relaxed);
                eprintln!("peer failed: {e:#}");
            }
        })
    };
    let (up_tx, up_rx) = tokio::sync::oneshot::channel();
    let mut tasks = vec![spawn(Part::Presenter, Some(up_tx))];
    tokio::time::timeout(Duration::from_secs(15), up_rx)
        .await
        .context("the presenter did not connect")?
        .context("the presenter failed")?;
    let gap = Duration::from_micros(1_000_000 / args.rate.max(1));
    for _ in 0..args.viewers {
        tasks.push(spawn(Part::Viewer, None));
        tokio::time::sleep(gap).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let done = totals.connected.load(Ordering::Relaxed) + totals.failed.load(Ordering::Relaxed);
        if done as usize > args.viewers {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let viewers = totals.connected.load(Ordering::Relaxed).saturating_sub(1);
    eprintln!("presenter and {viewers}/{} viewers connected", args.viewers);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _ = measure_tx.send(true);
    let cpu0 = args.server_pid.and_then(cpu_secs);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.secs)).await;
    let cpu1 = args.server_pid.and_then(cpu_secs);
    let wall = t0.elapsed().as_secs_f64();
    let _ = measure_tx.send(false);
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    let sent = totals.sent.load(Ordering::Relaxed);
    let received = totals.received.load(Ordering::Relaxed);
    let expected = totals.expected.load(Ordering::Relaxed).max(1);
    let loss = 100.0 * (1.0 - received as f64 / expected as f64);
    println!(
        "viewers={} connected={viewers} failed={} kbps={} fps={} presenter_sent={sent} viewers_received={received} expected={expected} loss={loss:.3}% keyframe_requests_at_presenter={}",
        args.viewers,
        totals.failed.load(Ordering::Relaxed),
        args.kbps,
        args.fps,
        totals.keyframe_requests.load(Ordering::Relaxed)
    );
    if let (Some(c0), Some(c1)) = (cpu0, cpu1) {
        let core = (c1 - c0) / wall;
        println!(
            "server_cpu={:.1}% of one core; {:.3} ms CPU per second per viewer; projected viewers per core: {:.0}",
            core * 100.0,
            1000.0 * core / viewers.max(1) as f64,
            if core > 0.0 { viewers as f64 / core } else { 0.0 }
        );
    }
    Ok(())
}
