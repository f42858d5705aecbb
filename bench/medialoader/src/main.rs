//! `medialoader`: a WebRTC load client for the media engine, built on str0m (no browser).
//!
//! It opens `--legs` calls to `sip:<user>@<domain>` (the echo plugin) over SIP/UDP, each a
//! str0m peer with one video m-line (VP8, DTLS-SRTP, full ICE, controlling), and once a leg is
//! connected sends video-sized RTP at `--kbps` for `--secs` seconds. Every packet echoed back is
//! counted; at the end it prints, per run, the packets sent and received and the loss, and —
//! with `--server-pid` — the server's CPU time (user+sys from `/proc/<pid>/stat`) over the
//! measured window, per leg and per forwarded stream.
//!
//! Each leg has its own UDP socket (the server answers every leg from one port, so the client
//! tells legs apart by its own port) and its own tokio task driving its `Rtc`: receive, write
//! when the pacing tick says so, and drain `poll_output` until `Timeout`.
//!
//! With `--video-clip` (and `--audio-clip`) the legs send recorded RTP instead of filler: real
//! VP8 (and Opus, on a second m-line) that a conference mixer decodes, as `bench/conference`
//! needs. A clip is a file of RFC 4571-framed RTP packets (a 2-byte length before each), as
//! GStreamer's `rtpstreampay ! filesink` writes it; each leg replays it in a loop, paced by the
//! packets' RTP timestamps, under its own SSRC and sequence numbers. Counting is per payload
//! type (the composite and the mix come back as two streams).
//!
//! With `--probe-clip` (loud Opus RTP; needs an `--audio-clip` of digital silence) it measures
//! the audio delay the mixer adds: every `--probe-every-ms` the first leg (the speaker) sends
//! `--probe-ms` of the loud clip instead of silence, and every other leg times how long after
//! the burst's first packet went out the first loud packet of its N−1 mix arrives (a mix of
//! silence encodes to a few bytes per Opus frame, a mix with the burst to many more:
//! `--probe-loud-bytes`). The loopback adds nothing measurable, the client's own scheduling
//! does (the figure is an upper bound).
//!
//! With `--video-probe-clip` (VP8 RTP whose picture turns bright at known frames) it measures
//! the video (glass-to-glass) delay the mixer adds: the first leg sends that clip instead of
//! `--video-clip`, every other leg decodes the composite it receives and times when the first
//! leg's tile (the brightest cell of the `--video-probe-grid`) turns bright, from when the
//! first packet of the changed frame went out (`video_probe.rs`).
//!
//! SIP is minimal and unauthenticated: the From is in a foreign domain, which the server does
//! not challenge for plugin-claimed requests (a conference room must be public to admit it).

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
use str0m::change::SdpAnswer;
use str0m::media::{Direction, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpWrite, SeqNo};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcConfig};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

mod bulk;
mod bulk_run;
mod video_probe;
use video_probe::{rtp_bytes, Grid, VideoProbe, Watcher};

#[derive(Parser, Debug, Clone)]
#[command(about = "WebRTC media load: str0m legs calling the echo plugin")]
struct Args {
    /// The server's SIP/UDP address.
    #[arg(long, default_value = "127.0.0.1:5060")]
    sip: SocketAddr,
    /// The SIP domain.
    #[arg(long, default_value = "example.test")]
    domain: String,
    /// The echo plugin's user.
    #[arg(long, default_value = "echo")]
    user: String,
    /// Concurrent legs.
    #[arg(long, default_value_t = 10)]
    legs: usize,
    /// Video bitrate each leg sends, kbit/s.
    #[arg(long, default_value_t = 1000)]
    kbps: u64,
    /// Measured seconds (after every leg connected and a warm-up second).
    #[arg(long, default_value_t = 20)]
    secs: u64,
    /// New calls per second while ramping up.
    #[arg(long, default_value_t = 100)]
    rate: u64,
    /// The local address for media sockets.
    #[arg(long, default_value = "127.0.0.1")]
    bind: std::net::IpAddr,
    /// The server's process id, to report its CPU time.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Recorded VP8 RTP to send instead of filler (RFC 4571 framing; `--kbps` is then unused).
    #[arg(long)]
    video_clip: Option<std::path::PathBuf>,
    /// Recorded Opus RTP to send on an audio m-line (RFC 4571 framing); needs `--video-clip`.
    #[arg(long, requires = "video_clip")]
    audio_clip: Option<std::path::PathBuf>,
    /// Loud Opus RTP the first leg sends in bursts, to time the mix's delay; needs an
    /// `--audio-clip` of digital silence.
    #[arg(long, requires = "audio_clip")]
    probe_clip: Option<std::path::PathBuf>,
    /// Time between the starts of two bursts, ms.
    #[arg(long, default_value_t = 1000)]
    probe_every_ms: u64,
    /// Length of one burst, ms.
    #[arg(long, default_value_t = 200)]
    probe_ms: u64,
    /// An Opus payload at least this long is a loud frame.
    #[arg(long, default_value_t = 40)]
    probe_loud_bytes: usize,
    /// VP8 RTP (RFC 4571 framing) whose picture turns bright at known frames: the first leg
    /// sends it instead of `--video-clip`, the others time when its tile turns bright.
    #[arg(long, requires = "video_clip")]
    video_probe_clip: Option<std::path::PathBuf>,
    /// The room's grid, `COLSxROWS`: the first leg's tile is the brightest cell (the centre of
    /// each is measured).
    #[arg(long, default_value = "2x2")]
    video_probe_grid: Grid,
    /// Mean luma (0–255) above which a picture (of the clip) or a tile (of the composite) is
    /// bright.
    #[arg(long, default_value_t = 128.0)]
    video_probe_luma: f64,
    /// Runtime worker threads; 0: one per available core. `bench/media/run.sh` passes 1 when
    /// it pins the client to one core, where a second worker only adds context switches.
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Bulk mode: str0m does each leg's SDP, ICE and DTLS, then the RTP goes past it (the SRTP
    /// keys tapped from DTLS as the server taps them): one thread seals, sends, receives and
    /// counts for every leg (`bulk_run.rs`), so that one core drives several hundred legs.
    /// Filler video only.
    #[arg(long, conflicts_with_all = ["video_clip", "probe_clip", "video_probe_clip"])]
    bulk: bool,
    /// Bulk mode: one echoed packet in this many per leg (and each leg's first) is decrypted
    /// and its payload checked.
    #[arg(long, default_value_t = 64)]
    verify_every: u64,
}

/// The delay probe's shared state: the speaker opens bursts, the listeners time them.
#[derive(Debug)]
struct Probe {
    loud: Arc<Clip>,
    every: Duration,
    burst: Duration,
    loud_bytes: usize,
    /// The current burst's number (from 1) and when its first packet went out.
    current: Mutex<(u64, Option<Instant>)>,
    /// Every listener's delay for every burst it heard.
    delays: Mutex<Vec<Duration>>,
    /// The longest payload a listener received outside bursts (how loud "silence" is).
    quiet_max: AtomicU64,
}

impl Probe {
    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The speaker's payload for an audio packet sent at `since` into the measured window:
    /// the loud clip's inside a burst (opening it on its first packet), else `None`.
    fn speak(&self, since: Duration, index: usize, now: Instant) -> Option<Arc<[u8]>> {
        let every = self.every.as_micros().max(1);
        let number = (since.as_micros() / every) as u64 + 1;
        let phase = since.as_micros() % every;
        if phase >= self.burst.as_micros() {
            return None;
        }
        let mut current = Self::lock(&self.current);
        if current.0 != number {
            *current = (number, Some(now));
        }
        let packets = &self.loud.packets;
        Some(packets[index % packets.len()].payload.clone())
    }

    /// A listener received an audio payload of `len` bytes; `heard` is the last burst it timed.
    fn listen(&self, len: usize, now: Instant, heard: &mut u64) {
        let (number, started) = *Self::lock(&self.current);
        if len < self.loud_bytes {
            return;
        }
        match started {
            Some(at) if number > *heard => {
                *heard = number;
                Self::lock(&self.delays).push(now.saturating_duration_since(at));
            }
            _ if number == *heard => {}
            _ => {
                self.quiet_max.fetch_max(len as u64, Ordering::Relaxed);
            }
        }
    }
}

/// One recorded RTP packet: what a leg re-sends under its own SSRC and sequence numbers.
#[derive(Debug)]
struct ClipPacket {
    /// RTP timestamp relative to the clip's first packet.
    ts: u32,
    marker: bool,
    payload: Arc<[u8]>,
}

/// A recorded stream, replayed in a loop.
#[derive(Debug)]
struct Clip {
    packets: Vec<ClipPacket>,
    /// RTP clock rate (90 kHz video, 48 kHz Opus).
    clock: u32,
    /// Length of one loop in RTP ticks (last timestamp plus one frame step).
    length: u32,
}

impl Clip {
    /// Reads RFC 4571-framed RTP packets from `path`.
    fn load(path: &std::path::Path, clock: u32) -> anyhow::Result<Clip> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let mut packets = Vec::new();
        let mut rest = &bytes[..];
        let mut first = None;
        while rest.len() >= 2 {
            let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
            let Some(packet) = rest.get(2..2 + len) else {
                bail!("{}: truncated packet", path.display());
            };
            rest = &rest[2 + len..];
            if packet.len() < 12 || packet[0] >> 6 != 2 {
                bail!("{}: not RTP", path.display());
            }
            let csrcs = usize::from(packet[0] & 0x0f);
            let mut header = 12 + 4 * csrcs;
            if packet[0] & 0x10 != 0 {
                let ext = packet
                    .get(header + 2..header + 4)
                    .context("short extension")?;
                header += 4 + 4 * usize::from(u16::from_be_bytes([ext[0], ext[1]]));
            }
            let ts = u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]);
            let first_ts = *first.get_or_insert(ts);
            packets.push(ClipPacket {
                ts: ts.wrapping_sub(first_ts),
                marker: packet[1] & 0x80 != 0,
                payload: packet.get(header..).context("short packet")?.into(),
            });
        }
        let mut stamps: Vec<u32> = packets.iter().map(|p| p.ts).collect();
        stamps.dedup();
        let step = match stamps.as_slice() {
            [.., a, b] => b - a,
            _ => bail!("{}: fewer than two frames", path.display()),
        };
        Ok(Clip {
            length: stamps[stamps.len() - 1] + step,
            packets,
            clock,
        })
    }
}

/// One leg's replay position in a clip.
struct Replay {
    clip: Arc<Clip>,
    mid: Mid,
    pt: Option<str0m::media::Pt>,
    index: usize,
    loops: u32,
    seq: u64,
}

impl Replay {
    /// When the next packet is due, counted from the leg's start.
    fn due(&self) -> Duration {
        let ticks = u64::from(self.loops) * u64::from(self.clip.length)
            + u64::from(self.clip.packets[self.index].ts);
        Duration::from_micros(ticks * 1_000_000 / u64::from(self.clip.clock))
    }

    /// Sends the next packet (with `payload` instead of the clip's, when given); returns false
    /// when the stream cannot send yet.
    fn send(&mut self, rtc: &mut Rtc, now: Instant, payload: Option<Arc<[u8]>>) -> bool {
        let mut api = rtc.direct_api();
        let (Some(pt), Some(tx)) = (self.pt, api.stream_tx_by_mid(self.mid, None)) else {
            return false;
        };
        let p = &self.clip.packets[self.index];
        let ts = p.ts.wrapping_add(self.loops.wrapping_mul(self.clip.length));
        tx.write_rtp(
            RtpWrite::new(
                pt,
                SeqNo::from(self.seq),
                ts,
                now,
                payload.unwrap_or_else(|| p.payload.clone()),
            )
            .marker(p.marker)
            .nackable(true),
        );
        self.seq += 1;
        self.index += 1;
        if self.index == self.clip.packets.len() {
            self.index = 0;
            self.loops += 1;
        }
        true
    }
}

/// RTP payload per packet: a video-sized packet under the usual 1200-byte MTU budget.
const PAYLOAD: usize = 1000;

#[derive(Default)]
struct Totals {
    sent: AtomicU64,
    received: AtomicU64,
    /// Sum over legs of (highest − lowest + 1) echoed sequence numbers seen.
    expected: AtomicU64,
    connected: AtomicU64,
    failed: AtomicU64,
    /// Complete frames (marker bits) of the VP8 stream received back, over every leg.
    video_frames: AtomicU64,
    /// Milliseconds every leg spent counting, summed (frames ÷ this = frames per second).
    counting_ms: AtomicU64,
    /// Packets received back so far, live (read at both ends of the CPU window, so that the
    /// server's CPU is divided by exactly the packets it echoed in that window).
    echoed_live: AtomicU64,
}

/// Routes SIP responses and requests to legs by Call-ID.
struct Sip {
    socket: UdpSocket,
    server: SocketAddr,
    legs: Mutex<HashMap<String, mpsc::UnboundedSender<Message>>>,
}

impl Sip {
    async fn pump(self: Arc<Self>) {
        let mut buf = vec![0u8; 65_536];
        loop {
            let Ok((n, _)) = self.socket.recv_from(&mut buf).await else {
                return;
            };
            let Ok(msg) = Message::parse(Bytes::copy_from_slice(&buf[..n])) else {
                continue;
            };
            let Some(call_id) = msg.call_id().map(str::to_owned) else {
                continue;
            };
            let tx = self
                .legs
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get(&call_id)
                .cloned();
            if let Some(tx) = tx {
                let _ = tx.send(msg);
            }
        }
    }

    async fn send(&self, text: &str) -> anyhow::Result<()> {
        self.socket.send_to(text.as_bytes(), self.server).await?;
        Ok(())
    }
}

fn token() -> String {
    static N: AtomicU64 = AtomicU64::new(1);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    format!("{:x}{:x}", t, n)
}

struct Call {
    call_id: String,
    from: String,
    to: String,
    ruri: String,
    cseq: u32,
}

fn request(sip: &Sip, call: &Call, method: &str, cseq: u32, body: Option<&str>) -> String {
    let local = sip
        .socket
        .local_addr()
        .map_or_else(|_| "0.0.0.0:0".into(), |a| a.to_string());
    let mut out = format!(
        "{method} {} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{};rport\r\nMax-Forwards: 70\r\nFrom: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {cseq} {method}\r\nContact: <sip:load@{local}>\r\n",
        call.ruri,
        token(),
        call.from,
        call.to,
        call.call_id,
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

/// Sends the INVITE with `offer` and ACKs its 200: the call (for its BYE) and the SDP answer.
async fn invite(args: &Args, sip: &Sip, offer: &str) -> anyhow::Result<(Call, SdpAnswer)> {
    let call_id = format!("{}@medialoader", token());
    let (tx, mut rx) = mpsc::unbounded_channel();
    sip.legs
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(call_id.clone(), tx);
    let mut call = Call {
        call_id: call_id.clone(),
        from: format!("<sip:load@loadgen.invalid>;tag={}", token()),
        to: format!("<sip:{}@{}>", args.user, args.domain),
        ruri: format!("sip:{}@{}", args.user, args.domain),
        cseq: 1,
    };
    sip.send(&request(sip, &call, "INVITE", 1, Some(offer)))
        .await?;
    let ok = loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .context("no final response to the INVITE")?
            .context("SIP closed")?;
        match msg.status() {
            Some(s) if s < 200 => continue,
            Some(200..=299) => break msg,
            Some(s) => bail!("INVITE answered {s}"),
            None => continue,
        }
    };
    call.to = ok.header(&HeaderName::To).unwrap_or_default().to_owned();
    sip.send(&request(sip, &call, "ACK", 1, None)).await?;
    let answer = SdpAnswer::from_sdp_string(std::str::from_utf8(ok.body())?)?;
    Ok((call, answer))
}

/// One leg: INVITE, ICE/DTLS, media until `stop`, BYE. With a `probe`, the `speaker` sends its
/// bursts and every other leg times them.
#[allow(clippy::too_many_arguments)]
async fn leg(
    args: Args,
    probe: Option<(Arc<Probe>, bool)>,
    video_probe: Option<(Arc<VideoProbe>, bool)>,
    clips: Option<(Arc<Clip>, Option<Arc<Clip>>)>,
    sip: Arc<Sip>,
    totals: Arc<Totals>,
    start_send: tokio::sync::watch::Receiver<bool>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let socket = UdpSocket::bind((args.bind, 0)).await?;
    let local = socket.local_addr()?;
    let now = Instant::now();
    let with_audio = clips.as_ref().is_some_and(|(_, a)| a.is_some());
    let mut rtc: Rtc = RtcConfig::new()
        .set_rtp_mode(true)
        .clear_codecs()
        .enable_vp8(true)
        .enable_opus(with_audio, false)
        .set_stats_interval(None)
        .build(now);
    rtc.add_local_candidate(Candidate::host(local, "udp")?);
    let mut change = rtc.sdp_api();
    let audio_mid = with_audio
        .then(|| change.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None));
    let mid: Mid = change.add_media(MediaKind::Video, Direction::SendRecv, None, None, None);
    let mut replays: Vec<Replay> = Vec::new();
    if let Some((video, audio)) = &clips {
        let fresh = |clip: &Arc<Clip>, mid: Mid| Replay {
            clip: clip.clone(),
            mid,
            pt: None,
            index: 0,
            loops: 0,
            seq: 1,
        };
        // The video probe's speaker sends the probe clip instead.
        let video = match &video_probe {
            Some((p, true)) => &p.clip,
            _ => video,
        };
        replays.push(fresh(video, mid));
        if let (Some(audio), Some(amid)) = (audio, audio_mid) {
            replays.push(fresh(audio, amid));
        }
    }
    let (offer, pending) = change.apply().context("an offer")?;
    let offer = offer.to_sdp_string();

    let (mut call, answer) = invite(&args, &sip, &offer).await?;
    rtc.sdp_api().accept_answer(pending, answer)?;

    let mut buf = vec![0u8; 2048];
    let interval = Duration::from_micros(PAYLOAD as u64 * 8 * 1000 / args.kbps.max(1));
    let mut next_send = Instant::now();
    let mut seq: u64 = 1;
    let mut ts: u32 = 0;
    let payload: Arc<[u8]> = vec![0x5a; PAYLOAD].into();
    let mut connected = false;
    let mut counting = false;
    // Per received payload type: (lowest, highest) sequence number and packets counted.
    let mut seen: HashMap<u8, (u64, u64)> = HashMap::new();
    let mut got = 0u64;
    let mut sent = 0u64;
    let mut pt = None;
    let mut replay_start: Option<Instant> = None;
    let mut counting_since: Option<Instant> = None;
    let mut frames = 0u64;
    let mut heard = 0u64;
    // A watcher of the video probe decodes the composite from the moment it connects.
    let mut watcher: Option<Watcher> = None;
    loop {
        // Drain.
        let timeout = loop {
            match rtc.poll_output()? {
                Output::Transmit(t) => {
                    let _ = socket.try_send_to(&t.contents, t.destination);
                }
                Output::Timeout(t) => break t,
                Output::Event(Event::Connected) => {
                    connected = true;
                    totals.connected.fetch_add(1, Ordering::Relaxed);
                    pt = rtc.codec_config().params().first().map(|p| p.pt());
                    for r in &mut replays {
                        let want = if r.clip.clock == 90_000 {
                            str0m::format::Codec::Vp8
                        } else {
                            str0m::format::Codec::Opus
                        };
                        r.pt = rtc
                            .codec_config()
                            .params()
                            .iter()
                            .find(|p| p.spec().codec == want)
                            .map(|p| p.pt());
                    }
                    if let (Some((probe, false)), Some(vp8)) =
                        (&video_probe, replays.first().and_then(|r| r.pt))
                    {
                        watcher = Some(Watcher::new(probe.clone(), *vp8)?);
                    }
                }
                Output::Event(Event::IceConnectionStateChange(
                    IceConnectionState::Disconnected,
                )) => {
                    bail!("ICE disconnected");
                }
                Output::Event(Event::RtpPacket(p)) => {
                    totals.echoed_live.fetch_add(1, Ordering::Relaxed);
                    if let Some(w) = &watcher {
                        if Some(p.header.payload_type) == replays.first().and_then(|r| r.pt) {
                            w.push(
                                rtp_bytes(
                                    *p.header.payload_type,
                                    p.header.marker,
                                    p.header.sequence_number,
                                    p.header.timestamp,
                                    *p.header.ssrc,
                                    &p.payload,
                                ),
                                Instant::now(),
                            );
                        }
                    }
                    if counting {
                        let vp8 = replays.first().and_then(|r| r.pt);
                        if p.header.marker && Some(p.header.payload_type) == vp8 {
                            frames += 1;
                        }
                        let opus = replays.get(1).and_then(|r| r.pt);
                        if let (Some((probe, false)), true) =
                            (&probe, Some(p.header.payload_type) == opus)
                        {
                            probe.listen(p.payload.len(), Instant::now(), &mut heard);
                        }
                        let s = *p.seq_no;
                        let e = seen.entry(*p.header.payload_type).or_insert((s, s));
                        e.0 = e.0.min(s);
                        e.1 = e.1.max(s);
                        got += 1;
                    }
                }
                Output::Event(_) => {}
            }
        };
        if *stop.borrow() {
            break;
        }
        let sending = connected && *start_send.borrow();
        if sending && !counting {
            counting = true;
            counting_since = Some(Instant::now());
        }
        if !replays.is_empty() {
            // Recorded media flows from the moment the leg connects: the mixer then sees real
            // streams (key frames, steady audio) before the measured window opens.
            if connected && replay_start.is_none() {
                replay_start = Some(Instant::now());
            }
            if let Some(start) = replay_start {
                next_send = replays
                    .iter()
                    .map(|r| start + r.due())
                    .min()
                    .unwrap_or(timeout);
            }
        }
        let replaying = replay_start.is_some();
        let wake = if (sending && replays.is_empty()) || replaying {
            timeout.min(next_send)
        } else {
            timeout
        };
        tokio::select! {
            r = socket.recv_from(&mut buf) => {
                let (n, source) = r?;
                if let Ok(recv) = Receive::new(Protocol::Udp, source, local, &buf[..n]) {
                    rtc.handle_input(Input::Receive(Instant::now(), recv))?;
                }
                continue;
            }
            () = tokio::time::sleep_until(wake.into()) => {}
        }
        let now = Instant::now();
        if let Some(start) = replay_start {
            for r in &mut replays {
                while start + r.due() <= now {
                    let payload = match (&probe, counting_since) {
                        (Some((probe, true)), Some(since)) if r.clip.clock == 48_000 => {
                            probe.speak(now.saturating_duration_since(since), r.index, now)
                        }
                        _ => None,
                    };
                    let onset = match (&video_probe, counting) {
                        (Some((probe, true)), true) if r.clip.clock == 90_000 => {
                            probe.onset.get(r.index).copied().unwrap_or(false)
                        }
                        _ => false,
                    };
                    if !r.send(&mut rtc, now, payload) {
                        break;
                    }
                    if let (true, Some((probe, _))) = (onset, &video_probe) {
                        probe.sent_onset(now);
                    }
                    if counting {
                        sent += 1;
                    }
                }
            }
        } else if sending && replays.is_empty() && now >= next_send {
            if let (Some(pt), Some(tx)) = (pt, rtc.direct_api().stream_tx_by_mid(mid, None)) {
                // Four packets per "frame" at 90 kHz: the timestamps of a ~30 fps stream.
                let marker = seq.is_multiple_of(4);
                tx.write_rtp(
                    RtpWrite::new(pt, SeqNo::from(seq), ts, now, payload.clone())
                        .marker(marker)
                        .nackable(true),
                );
                if marker {
                    ts = ts.wrapping_add(3000);
                }
                seq += 1;
                sent += 1;
            }
            next_send += interval;
            if next_send < now {
                next_send = now + interval;
            }
        }
        rtc.handle_input(Input::Timeout(now))?;
    }
    totals.sent.fetch_add(sent, Ordering::Relaxed);
    totals.received.fetch_add(got, Ordering::Relaxed);
    totals.video_frames.fetch_add(frames, Ordering::Relaxed);
    if let Some(since) = counting_since {
        totals
            .counting_ms
            .fetch_add(since.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
    let expected: u64 = seen.values().map(|(lo, hi)| hi - lo + 1).sum();
    totals.expected.fetch_add(expected, Ordering::Relaxed);
    call.cseq += 1;
    sip.send(&request(&sip, &call, "BYE", call.cseq, None))
        .await?;
    Ok(())
}

/// (user, system) CPU time of a process, from /proc/<pid>/stat (clock ticks → seconds).
fn cpu_split(pid: u32) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat(5) (utime, stime) are 12 and 13 after the command name; CLK_TCK
    // is 100 on Linux.
    let field = |i: usize| Some(fields.get(i)?.parse::<f64>().ok()? / 100.0);
    Some((field(11)?, field(12)?))
}

/// How long a process's threads were runnable but waited for a CPU, summed (seconds; the
/// second field of each `/proc/<pid>/task/<tid>/schedstat`): a run whose server or client
/// waited long lost packets to the machine's other load, not to its own work.
fn run_delay(pid: u32) -> Option<f64> {
    let mut ns = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let Ok(stat) = std::fs::read_to_string(task.ok()?.path().join("schedstat")) else {
            continue;
        };
        ns += stat
            .split_whitespace()
            .nth(1)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Some(ns as f64 / 1e9)
}

/// A process's (user, system) CPU seconds and its threads' wait for a CPU.
type Reading = (f64, f64, f64);
/// A [`Reading`], if readable.
type Cpu = Option<Reading>;

fn cpu_now(pid: u32) -> Cpu {
    let (user, sys) = cpu_split(pid)?;
    Some((user, sys, run_delay(pid)?))
}

/// The readings at the start of the measured window: the server's CPU, ours, the time.
#[derive(Debug, Clone, Copy)]
struct WindowStart(Cpu, Cpu, Instant);

/// The CPU readings at both ends of the measured window.
#[derive(Debug, Default, Clone, Copy)]
struct Window {
    wall: f64,
    /// Echoed packets received inside it.
    echoed: u64,
    /// The server's and this process's (user, system, waited) seconds at the start and the
    /// end.
    server: Option<(Reading, Reading)>,
    client: Option<(Reading, Reading)>,
    /// Packets the client sent in all (for its CPU per packet), 0 if not known.
    client_packets: u64,
}

impl Window {
    fn open(server_pid: Option<u32>) -> WindowStart {
        WindowStart(
            server_pid.and_then(cpu_now),
            cpu_now(std::process::id()),
            Instant::now(),
        )
    }

    fn close(start: WindowStart, server_pid: Option<u32>, echoed: u64) -> Window {
        let WindowStart(server0, client0, t0) = start;
        let server1 = server_pid.and_then(cpu_now);
        let client1 = cpu_now(std::process::id());
        Window {
            wall: t0.elapsed().as_secs_f64(),
            echoed,
            server: server0.zip(server1),
            client: client0.zip(client1),
            client_packets: 0,
        }
    }

    /// The server's CPU over the window (as before: per leg-second and per echoed packet, then
    /// user and system apart), and the load client's own.
    fn print(&self, connected: u64) {
        let wall = self.wall;
        let echoed = self.echoed;
        let per_packet = |s: f64| {
            if echoed > 0 {
                s * 1e6 / echoed as f64
            } else {
                0.0
            }
        };
        if let Some(((u0, s0, w0), (u1, s1, w1))) = self.server {
            let (user, sys) = (u1 - u0, s1 - s0);
            let cpu = user + sys;
            let core = cpu / wall;
            let per_leg_ms = 1000.0 * cpu / wall / connected.max(1) as f64;
            println!(
                "server_cpu={cpu:.2}s over {wall:.1}s = {:.1}% of one core; {per_leg_ms:.2} ms CPU per second per leg; projected legs per core at this load: {:.0}",
                core * 100.0,
                if core > 0.0 { connected as f64 / core } else { 0.0 }
            );
            // One echoed packet is one received and one sent by the server: half of this is the
            // cost of one forwarded packet.
            println!(
                "echoed_packets={echoed} ({:.0}/s) server_us_per_echoed_packet={:.1}",
                echoed as f64 / wall,
                per_packet(cpu)
            );
            println!(
                "server_split user_us_per_echoed_packet={:.1} sys_us_per_echoed_packet={:.1} waited_for_cpu_ms={:.0}",
                per_packet(user),
                per_packet(sys),
                (w1 - w0) * 1000.0
            );
        }
        if let Some(((u0, s0, w0), (u1, s1, w1))) = self.client {
            let (user, sys) = (u1 - u0, s1 - s0);
            let cpu = user + sys;
            let per_sent = if self.client_packets > 0 {
                format!(
                    "; {:.1} us per packet sent and echoed",
                    cpu * 1e6 / self.client_packets as f64
                )
            } else {
                String::new()
            };
            println!(
                "client_cpu={cpu:.2}s (user {user:.2}, sys {sys:.2}) client_core={:.1}%; {:.0} us per leg-second{per_sent}; waited_for_cpu_ms={:.0}",
                100.0 * cpu / wall,
                1e6 * cpu / wall / connected.max(1) as f64,
                (w1 - w0) * 1000.0
            );
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut runtime = if args.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    if args.threads > 1 {
        runtime.worker_threads(args.threads);
    }
    runtime.enable_all().build()?.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    str0m::crypto::from_feature_flags().install_process_default();
    let sip = Arc::new(Sip {
        socket: UdpSocket::bind((args.bind, 0)).await?,
        server: args.sip,
        legs: Mutex::new(HashMap::new()),
    });
    tokio::spawn(sip.clone().pump());
    if args.bulk {
        return run_bulk(args, sip).await;
    }
    let totals = Arc::new(Totals::default());
    let clips = match &args.video_clip {
        Some(video) => Some((
            Arc::new(Clip::load(video, 90_000)?),
            match &args.audio_clip {
                Some(audio) => Some(Arc::new(Clip::load(audio, 48_000)?)),
                None => None,
            },
        )),
        None => None,
    };
    let probe = match &args.probe_clip {
        Some(path) => Some(Arc::new(Probe {
            loud: Arc::new(Clip::load(path, 48_000)?),
            every: Duration::from_millis(args.probe_every_ms.max(1)),
            burst: Duration::from_millis(args.probe_ms),
            loud_bytes: args.probe_loud_bytes,
            current: Mutex::new((0, None)),
            delays: Mutex::new(Vec::new()),
            quiet_max: AtomicU64::new(0),
        })),
        None => None,
    };
    let video_probe = match &args.video_probe_clip {
        Some(path) => {
            gstreamer::init().context("GStreamer (for the video probe)")?;
            let probe = VideoProbe::load(
                Clip::load(path, 90_000)?,
                args.video_probe_grid,
                args.video_probe_luma,
            )?;
            eprintln!(
                "video probe: {} onsets in a clip of {} packets",
                probe.onset.iter().filter(|o| **o).count(),
                probe.onset.len()
            );
            Some(Arc::new(probe))
        }
        None => None,
    };
    let (start_tx, start_rx) = tokio::sync::watch::channel(false);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::with_capacity(args.legs);
    let gap = Duration::from_micros(1_000_000 / args.rate.max(1));
    for index in 0..args.legs {
        let (a, p, vp, c, s, t, st, sp) = (
            args.clone(),
            probe.clone().map(|p| (p, index == 0)),
            video_probe.clone().map(|p| (p, index == 0)),
            clips.clone(),
            sip.clone(),
            totals.clone(),
            start_rx.clone(),
            stop_rx.clone(),
        );
        let totals = t.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = leg(a, p, vp, c, s, t, st, sp).await {
                totals.failed.fetch_add(1, Ordering::Relaxed);
                eprintln!("leg failed: {e:#}");
            }
        }));
        tokio::time::sleep(gap).await;
    }
    // Wait for every leg to connect (or fail), bounded.
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let done = totals.connected.load(Ordering::Relaxed) + totals.failed.load(Ordering::Relaxed);
        if done as usize >= args.legs {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let connected = totals.connected.load(Ordering::Relaxed);
    eprintln!("{connected}/{} legs connected; sending", args.legs);
    let _ = start_tx.send(true);
    // A warm-up second, then the measured window.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let echoed0 = totals.echoed_live.load(Ordering::Relaxed);
    let start = Window::open(args.server_pid);
    tokio::time::sleep(Duration::from_secs(args.secs)).await;
    let echoed = totals.echoed_live.load(Ordering::Relaxed) - echoed0;
    let window = Window::close(start, args.server_pid, echoed);
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    let sent = totals.sent.load(Ordering::Relaxed);
    let received = totals.received.load(Ordering::Relaxed);
    let expected = totals.expected.load(Ordering::Relaxed).max(1);
    let loss = 100.0 * (1.0 - received as f64 / expected as f64);
    println!(
        "legs={} connected={connected} failed={} kbps_per_leg={} sent={sent} received={received} expected={expected} loss={loss:.3}%",
        args.legs,
        totals.failed.load(Ordering::Relaxed),
        args.kbps
    );
    if clips.is_some() {
        let ms = totals.counting_ms.load(Ordering::Relaxed).max(1) as f64;
        println!(
            "video_fps_received_per_leg={:.1}",
            totals.video_frames.load(Ordering::Relaxed) as f64 * 1000.0 / ms
        );
    }
    if let Some(probe) = &probe {
        let mut delays = Probe::lock(&probe.delays).clone();
        delays.sort();
        let at = |q: f64| {
            delays
                .get(((delays.len() as f64 - 1.0) * q).round() as usize)
                .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
        };
        println!(
            "audio_delay_ms p50={:.1} p90={:.1} max={:.1} samples={} quiet_max_bytes={}",
            at(0.5),
            at(0.9),
            at(1.0),
            delays.len(),
            probe.quiet_max.load(Ordering::Relaxed)
        );
    }
    if let Some(probe) = &video_probe {
        let delays = probe.delays();
        let at = |q: f64| {
            delays
                .get(((delays.len() as f64 - 1.0) * q).round() as usize)
                .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
        };
        let (darkest, brightest) = probe.luma_range();
        println!(
            "video_delay_ms p50={:.1} p90={:.1} max={:.1} samples={} pictures_decoded={} tile_luma={darkest:.0}..{brightest:.0}",
            at(0.5),
            at(0.9),
            at(1.0),
            delays.len(),
            probe.pictures.load(Ordering::Relaxed),
        );
    }
    window.print(connected);
    Ok(())
}

/// A bulk leg's set-up: SDP, ICE and DTLS by str0m (its keys tapped as the server taps them),
/// then the leg goes to the engine thread with its socket, its `Rtc` and SRTP contexts of its
/// own.
async fn bulk_handshake(
    args: Args,
    sip: Arc<Sip>,
    engine: std::sync::mpsc::Sender<bulk_run::Leg>,
    calls: Arc<Mutex<Vec<Call>>>,
) -> anyhow::Result<()> {
    use huddle::media::srtp::{LegSrtp, SrtpProfile};
    use str0m::rtp::Extension;

    let socket = UdpSocket::bind((args.bind, 0)).await?;
    let local = socket.local_addr()?;
    let config = RtcConfig::new()
        .set_rtp_mode(true)
        .clear_codecs()
        .enable_vp8(true)
        .set_stats_interval(None);
    let (mut rtc, keys) = huddle::media::keytap::build(config, Instant::now());
    rtc.add_local_candidate(Candidate::host(local, "udp")?);
    let mut change = rtc.sdp_api();
    let mid: Mid = change.add_media(MediaKind::Video, Direction::SendRecv, None, None, None);
    let (offer, pending) = change.apply().context("an offer")?;
    let (call, answer) = invite(&args, &sip, &offer.to_sdp_string()).await?;
    calls
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(call);
    rtc.sdp_api().accept_answer(pending, answer)?;

    let mut buf = vec![0u8; 2048];
    let mut remote = None;
    let give_up = Instant::now() + Duration::from_secs(20);
    let mut connected = false;
    loop {
        let timeout = loop {
            match rtc.poll_output()? {
                Output::Transmit(t) => {
                    remote = Some(t.destination);
                    let _ = socket.try_send_to(&t.contents, t.destination);
                }
                Output::Timeout(t) => break t,
                Output::Event(Event::Connected) => connected = true,
                Output::Event(Event::IceConnectionStateChange(
                    IceConnectionState::Disconnected,
                )) => bail!("ICE disconnected"),
                Output::Event(_) => {}
            }
        };
        if connected {
            break;
        }
        if Instant::now() >= give_up {
            bail!("not connected within 20 s");
        }
        tokio::select! {
            r = socket.recv_from(&mut buf) => {
                let (n, source) = r?;
                if let Ok(recv) = Receive::new(Protocol::Udp, source, local, &buf[..n]) {
                    rtc.handle_input(Input::Receive(Instant::now(), recv))?;
                }
            }
            () = tokio::time::sleep_until(timeout.min(give_up).into()) => {
                rtc.handle_input(Input::Timeout(Instant::now()))?;
            }
        }
    }
    // The tap filled the slot in the drain that said Connected.
    let keys = keys.take().context("no DTLS-SRTP keys captured")?;
    let profile =
        SrtpProfile::from_dtls(keys.profile).context("an SRTP profile we do not implement")?;
    let mut srtp = LegSrtp::from_keying_material(profile, &keys.material, keys.dtls_client)?;
    let pt = rtc
        .codec_config()
        .params()
        .first()
        .map(|p| *p.pt())
        .context("no VP8")?;
    let mut api = rtc.direct_api();
    let ssrc = *api
        .stream_tx_by_mid(mid, None)
        .context("no send stream")?
        .ssrc();
    // An SSRC none of str0m's streams uses, for our receiver reports: str0m seals its own
    // SRTCP with the same key and its own indices, under other SSRCs.
    let own_rtcp_ssrc = *api.new_ssrc();
    srtp.tx.reserve_own_rtcp_ssrc(own_rtcp_ssrc)?;
    let map = rtc.media(mid).context("no video")?.remote_extmap();
    let ids = bulk::ExtensionIds {
        mid: map.id_of(Extension::RtpMid),
        abs_send_time: map.id_of(Extension::AbsoluteSendTime),
        transport_cc: map.id_of(Extension::TransportSequenceNumber),
    };
    let remote = remote.context("str0m sent nothing")?;
    let socket = socket.into_std()?;
    socket.connect(remote)?;
    engine
        .send(bulk_run::Leg {
            socket,
            local,
            remote,
            rtc,
            srtp,
            pt,
            ssrc,
            own_rtcp_ssrc,
            mid: mid.to_string(),
            ids,
        })
        .ok()
        .context("the engine stopped")?;
    Ok(())
}

/// The bulk mode's run: the legs' handshakes on the runtime, the media on the engine thread
/// ([`bulk_run`]), the same measured window and result lines as the default mode plus the
/// engine's own counts.
async fn run_bulk(args: Args, sip: Arc<Sip>) -> anyhow::Result<()> {
    let shared = Arc::new(bulk_run::Shared::default());
    let settings = bulk_run::Settings {
        interval: Duration::from_micros(PAYLOAD as u64 * 8 * 1000 / args.kbps.max(1)),
        payload: PAYLOAD,
        verify_every: args.verify_every,
    };
    let (legs_tx, legs_rx) = std::sync::mpsc::channel();
    let engine = {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name("bulk".into())
            .spawn(move || bulk_run::run(legs_rx, shared, settings))?
    };
    let calls = Arc::new(Mutex::new(Vec::new()));
    let connected = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(args.legs);
    let gap = Duration::from_micros(1_000_000 / args.rate.max(1));
    for _ in 0..args.legs {
        let (a, s, e, c) = (args.clone(), sip.clone(), legs_tx.clone(), calls.clone());
        let (ok, bad) = (connected.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            match bulk_handshake(a, s, e, c).await {
                Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                Err(e) => {
                    eprintln!("leg failed: {e:#}");
                    bad.fetch_add(1, Ordering::Relaxed)
                }
            };
        }));
        tokio::time::sleep(gap).await;
    }
    drop(legs_tx);
    for t in tasks {
        // Each ends at its hand-over or its failure (bounded by the INVITE's and ICE's
        // timeouts).
        let _ = t.await;
    }
    let connected = connected.load(Ordering::Relaxed);
    eprintln!("{connected}/{} legs connected; sending", args.legs);
    shared.sending.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let echoed0 = shared.echoed_live.load(Ordering::Relaxed);
    let sent0 = shared.sent_live.load(Ordering::Relaxed);
    let start = Window::open(args.server_pid);
    tokio::time::sleep(Duration::from_secs(args.secs)).await;
    let echoed = shared.echoed_live.load(Ordering::Relaxed) - echoed0;
    let sent = shared.sent_live.load(Ordering::Relaxed) - sent0;
    let mut window = Window::close(start, args.server_pid, echoed);
    window.client_packets = sent + echoed;
    shared.stop.store(true, Ordering::Relaxed);
    let t = engine
        .join()
        .map_err(|_| anyhow::anyhow!("the engine panicked"))??;
    let calls = std::mem::take(
        &mut *calls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    for mut call in calls {
        call.cseq += 1;
        sip.send(&request(&sip, &call, "BYE", call.cseq, None))
            .await?;
    }
    let expected = t.expected.max(1);
    let loss = 100.0 * (1.0 - t.received as f64 / expected as f64);
    println!(
        "legs={} connected={connected} failed={} kbps_per_leg={} sent={} received={} expected={expected} loss={loss:.3}%",
        args.legs,
        failed.load(Ordering::Relaxed),
        args.kbps,
        t.sent,
        t.received,
    );
    // The engine's counts over the whole sending time (warm-up second included).
    let leg_secs = (t.legs.max(1) * (args.secs + 1)) as f64;
    println!(
        "bulk late_sends={} skipped={} send_errors={} verified={} verify_failed={} other_rtp={} rtcp_in={} ({:.1}/s per leg) reports_sent={} rtc_passes={} ({:.1}/s per leg) ice_lost={}",
        t.late_sends,
        t.skipped,
        t.send_errors,
        t.verified,
        t.verify_failed,
        t.other_rtp,
        t.rtcp_in,
        t.rtcp_in as f64 / leg_secs,
        t.reports_sent,
        t.rtc_passes,
        t.rtc_passes as f64 / leg_secs,
        t.ice_lost,
    );
    window.print(connected);
    Ok(())
}
